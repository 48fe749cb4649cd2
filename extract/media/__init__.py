"""Media decoding with PyAV: video frames with real timestamps, audio at 16 kHz mono, frame folders."""
