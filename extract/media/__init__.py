"""Media decoding with PyAV: video frames with real timestamps, 16 kHz mono audio, frame folders."""
