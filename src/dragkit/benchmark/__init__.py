"""Benchmark runs (:mod:`.runner`), their evaluation and reports (:mod:`.report`, :mod:`.plots`)."""
