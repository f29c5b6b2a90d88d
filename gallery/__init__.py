"""The staff gallery: server-rendered pages over the generations domain."""
