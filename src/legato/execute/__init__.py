"""Where instances run: the parallel local executor (``legato.execute.local``)."""
