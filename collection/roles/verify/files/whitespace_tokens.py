"""Print the ids of the tokens that decode to whitespace only, as a JSON list; run with the engine venv's Python.

A random-weight model asked for a tool call tends to emit whitespace forever inside the constrained JSON; biasing
these ids away (logit_bias -100) makes it write the call. The tokenizer comes from the local Hub cache (offline).
"""

import json
import sys

from transformers import AutoTokenizer


def main() -> int:
    repo, revision = sys.argv[1], sys.argv[2]
    tokenizer = AutoTokenizer.from_pretrained(repo, revision=revision)
    special = set(tokenizer.all_special_ids)
    ids = [
        token_id
        for token_id in range(len(tokenizer))
        if token_id not in special and tokenizer.decode([token_id]).strip() == ""
    ]
    print(json.dumps(ids))
    return 0


if __name__ == "__main__":
    sys.exit(main())
