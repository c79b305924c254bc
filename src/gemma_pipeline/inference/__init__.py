"""Using the fine-tune: chat models over transformers or llama.cpp, option probabilities,
llama.cpp's OpenAI-compatible server, and retrieval-augmented answers through LangChain.

The console script (``gemma_pipeline.console``) and the web demo are thin layers over this package;
it knows nothing of the catalog: callers hand it paths and parameters.
"""
