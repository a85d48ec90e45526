"""A fine-tuned language model answering prompts (`.jsonl` conversations or `.txt`, one per line): a
CSV (`id,response`) or, when `predict.output` ends in .jsonl, one JSON line per prompt."""

from __future__ import annotations

import json
import time
from pathlib import Path

from fakefinder.config import Config, ConfigError
from fakefinder.core.events import as_events
from fakefinder.core.results import Predictor, PredictResult
from fakefinder.tasks.llm_lora.config import PROMPT_EXTENSIONS


class TextPredictor(Predictor):
    """A fine-tuned language model answering prompts."""

    inputs = PROMPT_EXTENSIONS

    def __init__(self, artifact, device, config: Config) -> None:
        from fakefinder.tasks.llm_lora.model import load

        self.artifact = artifact
        self.kind = artifact.kind
        self.model, self.tokenizer, self.meta, self.kind = load(artifact.path, device)
        self.device = device
        self.max_new_tokens = config.llm.eval.max_new_tokens
        self.system_prompt = (
            (self.meta.get("llm") or {}).get("data", {}).get("system_prompt")
        )  # as in training

    def answer(self, conversations: list[list[dict]], batch_size: int = 8) -> list[str]:
        from fakefinder.tasks.llm_lora.train import generate

        return generate(
            self.model, self.tokenizer, conversations, self.max_new_tokens, self.device, batch_size
        )

    def run(self, config: Config, events=None) -> PredictResult:
        """Answers to the prompts in `predict.inputs` (.jsonl or .txt files)."""
        import pandas as pd

        from fakefinder.core.files import atomic_write, atomic_write_text, input_files
        from fakefinder.tasks.llm_lora.data import read_prompts

        events = as_events(events)
        pc = config.predict
        try:
            files = input_files(pc.inputs, PROMPT_EXTENSIONS, "a language model answering prompts")
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        prompts = [p for file in files for p in read_prompts(file, self.system_prompt)]
        if not prompts:
            raise ConfigError(f"no prompts found in {', '.join(map(str, pc.inputs))}")
        started = time.perf_counter()
        stage = events.stage("predict", total=len(prompts))
        answers = []
        for start in range(0, len(prompts), pc.batch_size):
            chunk = prompts[start : start + pc.batch_size]
            answers += self.answer([turns for _, turns in chunk], pc.batch_size)
            stage.advance(len(chunk))
        events.end(stage)
        seconds = time.perf_counter() - started
        table = pd.DataFrame(
            {
                "id": [i for i, _ in prompts],
                "prompt": [t[-1]["content"] for _, t in prompts],
                "response": answers,
            }
        )
        output = Path(pc.output)
        if output.suffix.lower() == ".jsonl":
            atomic_write_text(
                output, "".join(json.dumps(row) + "\n" for row in table.to_dict(orient="records"))
            )
        else:
            shown = table[["id", "response"]].rename(columns={"id": pc.id_column})
            atomic_write(output, lambda h: shown.to_csv(h, index=False))
        rate = len(prompts) / seconds if seconds else float("inf")
        events.result(
            "predict",
            {"prompts": len(prompts), "seconds": seconds, "output": str(output)},
            f"answered {len(prompts)} prompt(s) in {seconds:.1f} s ({rate:.2f}/s)\nanswers: {output}",
        )
        return PredictResult(output, None, table, seconds, rate, {})
