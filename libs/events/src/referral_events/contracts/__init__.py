"""Published payload models, one module per producing service.

Type names are `<entity>.<past-tense verb>.v<N>`; the producing service is the CloudEvents source.
"""
