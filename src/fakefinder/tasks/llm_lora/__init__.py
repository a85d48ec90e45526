"""LLM fine-tuning with LoRA (`llm_lora`) and QLoRA (`llm_qlora`: the same, on a 4-bit base) with
transformers, peft and bitsandbytes; one `llm` config section serves both kinds."""

from fakefinder.tasks.llm_lora.config import PROMPT_EXTENSIONS, LlmConfig
from fakefinder.tasks.registry import Task

_SHORT_FORM = {"base_model": "llm.model.base", "dataset_path": "llm.data.train_file", "epochs": "llm.train.epochs",
               "batch_size": "llm.train.batch_size", "learning_rate": "llm.train.lr"}
_OPTIONS = ("llm.train", "llm.lora", "llm.data", "llm.model", "llm.eval", "llm")

LORA = Task("llm_lora", "fakefinder.tasks.llm_lora.kind", "LoRA fine-tuning of a causal language model",
            section="llm", section_model=LlmConfig, short_form=_SHORT_FORM, output_key="llm.train.output_dir",
            option_sections=_OPTIONS, adapter="adapter", predict_inputs=PROMPT_EXTENSIONS)
QLORA = Task("llm_qlora", "fakefinder.tasks.llm_lora.kind",
             "QLoRA fine-tuning: a LoRA adapter on a 4-bit (bitsandbytes) causal language model",
             section="llm", section_model=LlmConfig, defaults={"llm": {"lora": {"use_4bit": True}}},
             short_form=_SHORT_FORM, output_key="llm.train.output_dir", option_sections=_OPTIONS, adapter="adapter",
             predict_inputs=PROMPT_EXTENSIONS)
