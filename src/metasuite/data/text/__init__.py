"""The text modality: labelled sentences → token-id few-shot tasks.

``rows`` reads the layouts, ``tokenizer`` wraps Hugging Face tokenisation (imported
lazily), ``load`` keeps one token-id cache per data set and tokenizer, ``sampler`` draws
tasks as pure functions of (seed, split, index) in the same :class:`TaskBatch` the image
tasks use, so the learners and the builder run text unchanged.
"""
