"""Image classifiers (grove/catalogue.py imports them, which registers them)."""
