"""Prints what a person needs after scripts/sandbox.sh: the endpoint, where its key is, a request to paste and
the newest benchmark's figures. Reads `glm-deploy client-env --for openai --json` on standard input."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

BENCHMARK_ROWS = (
    ("output tok/s", "output_throughput"),
    ("total tok/s", "total_token_throughput"),
    ("TTFT mean ms", "mean_ttft_ms"),
    ("TTFT p99 ms", "p99_ttft_ms"),
    ("TPOT mean ms", "mean_tpot_ms"),
    ("ITL mean ms", "mean_itl_ms"),
    ("ITL p99 ms", "p99_itl_ms"),
)


def main() -> int:
    env = json.load(sys.stdin)
    if not env.get("base_url"):
        print(f"  no endpoint: {env.get('error', 'client-env gave no base URL')}")
        return 1
    base, model, key_file = env["base_url"], env["model"], env["key_file"]
    # OpenAI clients' base URL already ends in /v1.
    print(f"  endpoint : {base}   (model {model!r})")
    print(f"  API key  : {key_file} (mode 0600; not printed)")
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 32})
    print("  try it   :")
    print(f'    curl -s {base}/chat/completions -H "Authorization: Bearer $(cat {shlex.quote(key_file)})" \\')
    print(f"      -H 'Content-Type: application/json' -d {shlex.quote(body)}")
    print("  agents   : glm-deploy client-env --for claude-code   (or --for openai)")
    results = sorted(Path("results").glob("*/*.json"), key=lambda path: path.stat().st_mtime)
    if not results:
        print("  benchmark: no result yet (ansible-playbook playbooks/benchmark.yml -i sandbox)")
        return 0
    result = json.loads(results[-1].read_text())
    print(f"  benchmark: {results[-1]}")
    for label, key in BENCHMARK_ROWS:
        value = result.get(key)
        shown = f"{value:10.1f}" if isinstance(value, int | float) else f"{'n/a':>10}"
        print(f"    {label:<14}{shown}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
