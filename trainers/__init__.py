"""TRL-based fine-tuning toward human vote distributions (see :mod:`trainers.train`)."""
