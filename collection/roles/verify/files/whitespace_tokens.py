"""Print the ids of the tokens that decode to whitespace only, as a JSON list. Standard library only: it reads the
tokenizer.json of the model's snapshot in the local Hub cache (HF_HOME), so the host's own Python runs it whether
the engine is a venv or a container image.

A small model asked for a tool call can emit whitespace forever inside the constrained JSON; biasing these ids
away (logit_bias -100) makes it write the call. Byte-level BPE vocabularies (GLM's, the sandbox's) write each byte
as one printable character; the map below is that standard byte-to-character table.
"""

import json
import os
import sys


def byte_level_alphabet():
    """The byte -> character table of byte-level BPE: printable Latin-1 bytes stand for themselves, the others are
    moved past 255 in byte order."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    table = {}
    shifted = 0
    for byte in range(256):
        if byte in printable:
            table[byte] = chr(byte)
        else:
            table[byte] = chr(256 + shifted)
            shifted += 1
    return {character: byte for byte, character in table.items()}


def snapshot_dir(repo, revision):
    hub = os.path.join(os.environ.get("HF_HOME", os.path.expanduser("~/.cache/huggingface")), "hub")
    folder = os.path.join(hub, "models--" + repo.replace("/", "--"))
    ref_file = os.path.join(folder, "refs", revision)
    commit = revision
    if os.path.isfile(ref_file):
        with open(ref_file) as handle:
            commit = handle.read().strip()
    return os.path.join(folder, "snapshots", commit)


def whitespace_ids(tokenizer):
    characters = byte_level_alphabet()
    special = {entry["id"] for entry in tokenizer.get("added_tokens", []) if entry.get("special")}
    ids = []
    for token, token_id in tokenizer["model"]["vocab"].items():
        if token_id in special or not token:
            continue
        if any(character not in characters for character in token):
            continue
        text = bytes(characters[character] for character in token).decode("utf-8", "replace")
        if text.strip() == "":
            ids.append(token_id)
    return sorted(ids)


def main():
    repo, revision = sys.argv[1], sys.argv[2]
    path = os.path.join(snapshot_dir(repo, revision), "tokenizer.json")
    try:
        with open(path, encoding="utf-8") as handle:
            tokenizer = json.load(handle)
    except (OSError, ValueError) as error:
        print("cannot read %s: %s" % (path, error), file=sys.stderr)
        return 1
    if tokenizer.get("model", {}).get("type") != "BPE":
        print("[]")  # not a byte-level BPE vocabulary: nothing to bias
        return 0
    print(json.dumps(whitespace_ids(tokenizer)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
