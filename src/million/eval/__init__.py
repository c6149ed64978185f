"""Quality evaluation: perplexity and needle-in-a-haystack for PQ and the methods it is compared with.

- :mod:`million.eval.methods`: the registry of KV methods with their true bits per element
- :mod:`million.eval.runners`: the all-quantized and deployed protocols
- :mod:`million.eval.ppl`, :mod:`million.eval.needle`: the two measurements
- :mod:`million.eval.cli`: ``million eval ppl|needle``
"""
