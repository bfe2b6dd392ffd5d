"""What is learned: the MAML++ math (reference), the network, the backends laying
out the meta-batch, and the stateful system. Imports only base modules and data."""
