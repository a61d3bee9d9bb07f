"""Speech models: keyword spotting (kws.py) and CTC transcription (ctc.py); grove/catalogue.py imports them."""
