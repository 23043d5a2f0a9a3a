import logging

# torchao (the quantized base) logs a warning for each optional CUDA kernel library it cannot load, on every import
logging.getLogger("torchao").setLevel(logging.ERROR)
