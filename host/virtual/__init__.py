"""Virtual hardware for thermogate: the emulated MLX90640, ESP32 ROM loader and virtual units."""
