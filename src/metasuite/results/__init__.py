"""Reading experiment folders back: status, tables over seeds, plots."""
