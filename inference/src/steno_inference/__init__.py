"""steno's transcription engine: audio in, timestamped (and diarized) transcripts out.

One engine serves every entry point (the CLI, the gRPC server and the job
worker). Modules keep one concern each: ``audio`` decodes, ``vad`` and
``segmentation`` find and pack speech into windows, ``features`` computes
log-mel, ``runner`` runs Whisper, ``alignment`` places words, ``transcript``
and ``formats`` hold and render the result, ``engine`` ties them together.
"""

__version__ = "0.1.0"
