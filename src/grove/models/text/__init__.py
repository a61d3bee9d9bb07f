"""Text models: language models and sequence classifiers (grove/catalogue.py imports them, which registers them)."""
