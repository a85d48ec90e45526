"""DX-LLaVA: an explainable deepfake detector (LLaVA + ConvNeXt/CLIP vision tower + binary head).

Build, train (stage 1 projector, stage 2 full / LoRA / QLoRA), save, merge and run it; the heavy
imports (transformers, peft, bitsandbytes) happen only when these functions are used.
"""
