"""TRL's SFTTrainer with what this project needs on top: logits only where the loss is, on every
device, packed rows, and batches that keep a question's rotated copies together."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from peft import PeftModel
from transformers import PreTrainedModel
from trl import SFTTrainer

from gemma_pipeline.modeling.heads import project_to_logits, run_backbone
from gemma_pipeline.prompting import IGNORE_INDEX

from .data import GroupShuffleSampler
from .kernels import keep_norms_in_float32


def selective_causal_lm_loss(
    model: PreTrainedModel | PeftModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    labels: torch.Tensor,
    num_items_in_batch: int | torch.Tensor | None = None,
    position_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """Causal-LM cross-entropy that projects only labelled positions through the LM head.

    Gemma's head (256k-262k vocabulary) is most of a small model's compute; with loss on a few
    completion tokens, projecting every position wastes it. TRL's fused head does the same but
    only compacts on CUDA/XPU. Final-logit softcapping is applied exactly as the model does.
    Packed rows come with ``position_ids`` and no ``attention_mask`` (see ``PackingCollator``).
    """
    hidden = run_backbone(
        model,
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids,
        use_cache=False,
    ).last_hidden_state
    targets = labels[:, 1:]
    mask = targets != IGNORE_INDEX
    logits = project_to_logits(model, hidden[:, :-1][mask])
    total = F.cross_entropy(logits, targets[mask], reduction="sum")
    denominator = mask.sum() if num_items_in_batch is None else num_items_in_batch
    return total / torch.as_tensor(denominator, device=total.device).clamp(min=1)


class QLoRASFTTrainer(SFTTrainer):
    """SFTTrainer whose loss projects only labelled positions and whose sampler keeps groups.

    ``recipe="padded"`` keeps the seed project's loss for comparison: the model's own forward, with
    logits over the whole vocabulary at every position, pads included.
    """

    def __init__(
        self, *args, group_ids: list[str] | None = None, recipe: str = "packed", **kwargs
    ) -> None:
        self._group_ids = group_ids
        self._recipe = recipe
        super().__init__(*args, **kwargs)
        if self.args.fp16:
            # TRL casts QLoRA adapters to bf16; fp16 mixed precision needs float32 master
            # weights (loss scaling unscales their gradients, and fp16 steps would round away).
            for parameter in self.model.parameters():
                if parameter.requires_grad:
                    parameter.data = parameter.data.float()
            keep_norms_in_float32(self.model)

    def _get_train_sampler(self, train_dataset=None):
        if self._group_ids is None:
            return super()._get_train_sampler(train_dataset)
        return GroupShuffleSampler(self._group_ids, seed=self.args.data_seed or self.args.seed)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self._recipe == "padded":
            loss = model(**inputs, use_cache=False, num_items_in_batch=num_items_in_batch).loss
        else:
            loss = selective_causal_lm_loss(
                model,
                inputs["input_ids"],
                inputs.get("attention_mask"),
                inputs["labels"],
                num_items_in_batch=num_items_in_batch,
                position_ids=inputs.get("position_ids"),
            )
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * self.accelerator.num_processes
        return (loss, None) if return_outputs else loss
