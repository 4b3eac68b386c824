"""`host sim`: physically simulated scenes run on a virtual unit (the real firmware, MLX90640 emulator)."""
