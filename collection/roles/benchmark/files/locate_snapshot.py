"""Print the local snapshot folder of a Hub repo (offline): the benchmark client reads the tokenizer from it."""

import sys

from huggingface_hub import snapshot_download

print(snapshot_download(sys.argv[1], revision=sys.argv[2], local_files_only=True))
