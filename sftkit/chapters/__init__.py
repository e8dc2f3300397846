"""Methods of the later chapters (notebooks 05-08), kept apart from the core SFT pipeline.

The core (`sftkit.config` ... `sftkit.runs`) is what every run needs: data, the chat
template of a base model, assistant-only masks, LoRA SFT, generation, evaluation. The
modules here each serve one later chapter and go beyond that pipeline:

- `trials`: a resumable grid of LoRA settings (chapter 05, `sftkit trials`);
- `trial_choice`: the rule that picks among trials, and their table (chapter 05);
- `preference`: on-policy preference pairs and LoRA DPO (chapter 06);
- `verifiable_preferences`: on-policy pairs judged by IFEval's official checkers (chapter 06);
- `alpaca`: Alpaca-format data, full fine-tuning vs hand-written LoRA vs peft (chapter 07);
- `classify`: a last-token classification head (chapter 08);
- `distill`: sequence- and token-level knowledge distillation (chapter 08).

They live in a subpackage as TRL keeps `trl/experimental/`, so the layout shows what the
core is, and so the architecture test can hold that the core never imports them: a chapter
may use any core module, no core module may use a chapter (only `sftkit.cli` loads `trials`,
lazily, for `sftkit trials`). The name is "chapters", not "experimental", because these are
not unstable APIs: each is tested and backs a committed notebook; what sets them apart is
that a run of the core pipeline does not need them.
"""
