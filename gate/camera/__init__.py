"""Frame sources behind one small contract (open / frames / close, context manager):
Picamera2, OpenCV (V4L2 / GStreamer) and replay, each in its own module that alone
imports its library. Built with the gate runtime; nothing here yet."""
