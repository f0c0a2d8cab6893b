"""The pure core of dma: values in, decisions and bytes out; no I/O of any kind."""
