"""``probekit choose``: the BrainBench forced-choice test of a causal LM on an items file.

Each item is an abstract with its edit written ``[[original, altered]]`` (a CSV with a
``combined_abstract`` column, as BrainBench ships its test cases, or JSONL). The model picks the
version with the lower perplexity; the command writes a report page, a per-item table and
``summary.json`` into ``--out`` and prints the headline numbers (``docs/forced_choice.md``).
"""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "choose",
        help="forced choice (BrainBench): does a causal LM prefer the original of each abstract?",
    )
    p.add_argument("model", help="causal LM checkpoint (a Hugging Face directory, ...)")
    p.add_argument("--items", required=True, help="items file (.csv or .jsonl) with [[orig, alt]]")
    p.add_argument("--out", required=True, help="output directory (page, items.csv, summary.json)")
    p.add_argument("--template", default=None, help="prompt template with {text} for the abstract")
    p.add_argument(
        "--score",
        choices=["text", "abstract"],
        default="text",
        help="score every token of the prompt (default) or only the abstract's",
    )
    p.add_argument("--seed", type=int, default=42, help="seed of the A/B coin (default 42)")
    p.add_argument("--batch-size", type=int, default=8, help="texts per forward pass (default 8)")
    p.add_argument("--no-control", action="store_true", help="skip the context control")
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from probekit.errors import UsageError

    if not Path(args.model).exists():
        raise UsageError(f"no such checkpoint: {args.model}")
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.template is not None and "{text}" not in args.template:
        raise UsageError("--template must contain {text} where the abstract goes")

    import probekit as pk

    # Read the items before loading the model: a bad file fails fast, in one line.
    items = pk.forced_choice.parse_items(args.items)
    model = pk.load(args.model)
    result = pk.forced_choice.evaluate(
        model,
        [item.source for item in items],
        template=args.template,
        score=args.score,
        seed=args.seed,
        batch_size=args.batch_size,
        context_control=not args.no_control,
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    frame = result.frame.assign(abstract=[item.source for item in items])
    frame.to_csv(out / "items.csv", index=False)
    (out / "summary.json").write_text(json.dumps(result.summary, indent=2, default=str) + "\n")
    pk.report.write([result], out / "choose.html", title=f"Forced choice: {args.model}")
    s = result.summary
    line = f"accuracy {s['accuracy']:.3f} over {s['n_items']} items ({s['ties']} ties)"
    if "calibration_slope" in s:
        line += f", calibration slope {s['calibration_slope']:+.4f} per bin"
    if "context_control_accuracy" in s:
        line += f", context control {s['context_control_accuracy']:.3f}"
    print(line)
    print(f"wrote {out / 'choose.html'}, {out / 'items.csv'}, {out / 'summary.json'}")
    return 0
