"""Language modelling from plain text: masked (BERT's objective) and causal (GPT's).

A row is a document (a .txt file, a line of one with `data.line_by_line=true`, or a text column
of jsonl / parquet / csv). The documents of a split are tokenized without special tokens and
concatenated, a separator between documents (the end-of-text token of a decoder, the [SEP] of
an encoder), then cut into blocks: `data.max_length` tokens with the encoder's special tokens
for `masked_lm`, `task.block_size` tokens for `causal_lm`. With `data.line_by_line`, each row is
cut on its own (no block spans two rows). No text is dropped: the last block may be shorter.

Masked LM masks `task.mlm_probability` of the tokens with transformers'
DataCollatorForLanguageModeling (80 % [MASK], 10 % a random token, 10 % unchanged; whole words
with `task.whole_word_mask`). Training blocks are masked anew each epoch, each block from a seed
of (run seed, epoch, block): the masks do not depend on the backend, the batch a block lands in,
the number of processes or a resume. Dev and test blocks are masked once, when encoded, from
`task.eval_mask_seed`: every evaluation of a run (and of another run) scores the same masks.

The loss of a split is the mean loss per predicted token over the whole split (masked tokens,
or every next token), weighted by tokens rather than by batch; perplexity is its exp.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from omegaconf import DictConfig

from expkit.data import RawData, text_column
from expkit.errors import ConfigError, DataError, ExpkitError
from expkit.tasks.base import Task, check_fast_tokenizer, model_tensors

# bookkeeping columns of the encoding, kept out of the batch by the collator
EXAMPLE = "example"  # the block (training, dev, test) or the input row (predict, evaluate)
SPECIAL = "special_tokens_mask"  # training blocks of masked LM: tokens never masked
OFFSETS = "offsets"  # training blocks with whole-word masking: each token's characters
BOOKKEEPING = (EXAMPLE, SPECIAL, OFFSETS)
# the second part of an evaluation mask's seed: each split is masked on its own
_SPLIT_CODES = {"train": 0, "dev": 1, "test": 2, "input": 3}


def mixed_seed(*parts: int) -> int:
    """A torch seed from several integers (run seed, epoch, block; run seed, prompt), well
    mixed."""
    import numpy as np

    state = np.random.SeedSequence([int(p) for p in parts]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def mask_block(
    masker: Any, ids: list[int], special: list[int], offsets: list | None, seed: int
) -> tuple[list[int], list[int]]:
    """(input ids, labels) of one block masked by `masker` (a DataCollatorForLanguageModeling)
    with its own generator: labels are -100 where nothing is to be predicted."""
    import numpy as np
    import torch

    masker.generator = torch.Generator().manual_seed(seed)
    offset_mapping = np.asarray([offsets], dtype=np.int64) if offsets is not None else None
    inputs, labels = masker.torch_mask_tokens(
        torch.tensor([ids], dtype=torch.long),
        special_tokens_mask=torch.tensor([special], dtype=torch.long),
        offset_mapping=offset_mapping,
    )
    return inputs[0].tolist(), labels[0].tolist()


def pad_rows(rows: list[dict[str, list]], pad_id: int) -> dict[str, Any]:
    """Right-padded tensors of a batch: ids with the padding token, labels with -100, the
    attention mask and the rest with 0."""
    import torch

    width = max(len(r["input_ids"]) for r in rows)
    fill = {"input_ids": pad_id, "labels": -100}
    return {
        key: torch.tensor(
            [list(r[key]) + [fill.get(key, 0)] * (width - len(r[key])) for r in rows],
            dtype=torch.long,
        )
        for key in rows[0]
    }


class LMCollator:
    """Pads a batch; with a masker (masked LM), masks the training blocks (those that carry
    their special-token mask and no labels) from (seed, epoch, block). The epoch comes from the
    training order (EpochSampler.set_epoch), so a block is masked differently each epoch."""

    def __init__(self, tokenizer: Any, masker: Any = None, seed: int = 0) -> None:
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.masker = masker
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        rows = []
        for f in features:
            row = {k: list(v) for k, v in f.items() if k not in BOOKKEEPING}
            if self.masker is not None and SPECIAL in f and "labels" not in row:
                seed = mixed_seed(self.seed, self.epoch, int(f[EXAMPLE]))
                row["input_ids"], row["labels"] = mask_block(
                    self.masker, row["input_ids"], list(f[SPECIAL]), f.get(OFFSETS), seed
                )
            rows.append(row)
        return pad_rows(rows, self.pad_id)


def _column(encoded: Any, name: str) -> list | None:
    """A column of an encoding (a dict of lists, or a datasets.Dataset), None if absent."""
    names = encoded.column_names if hasattr(encoded, "column_names") else list(encoded)
    return list(encoded[name]) if name in names else None


class LanguageModelingTask(Task):
    """What masked and causal language modelling share: reading text, packing it into blocks,
    the token-weighted loss and perplexity."""

    objective = "eval_loss"
    losses: ClassVar[tuple[str, ...]] = ("model",)
    summary: ClassVar[tuple[str, ...]] = ("loss", "perplexity")
    metric_names: ClassVar[tuple[str, ...]] = ("perplexity", "accuracy")
    shift: ClassVar[bool] = False  # causal LM: token t predicts token t + 1

    # -- at the door ---------------------------------------------------------------------------
    def check(self, cfg: DictConfig) -> list[str]:
        errors = super().check(cfg)
        if len(cfg.data.text_fields) != 1:
            errors.append(
                f"task={self.name} reads one text column; data.text_fields="
                f"{list(cfg.data.text_fields)} names {len(cfg.data.text_fields)}"
            )
        return errors

    # -- data ----------------------------------------------------------------------------------
    def read(
        self,
        tables: dict[str, tuple[list[str], list[dict]]],
        sources: dict[str, str],
        data_cfg: DictConfig,
        notes: list[str],
    ) -> RawData:
        field = str(data_cfg.text_fields[0])
        texts, labels = {}, {}
        for split, (columns, rows) in tables.items():
            texts[split] = self.read_inputs(columns, rows, data_cfg, sources[split])
            if not any(t.strip() for t in texts[split][0]):
                raise DataError(f"{sources[split]}: no text (every row's '{field}' is blank)")
            labels[split] = [None] * len(rows)  # the text is its own label
        return RawData(texts, labels, [], sources, notes, [field])

    def read_inputs(
        self, columns: list[str], rows: list[dict], data_cfg: DictConfig, source: str
    ) -> list[list[str]]:
        field = str(data_cfg.text_fields[0])
        if field not in columns:
            raise DataError(
                f"{source} has no text column '{field}' (data.text_fields); its columns are: "
                f"{', '.join(columns)}"
            )
        return [text_column([r[field] for r in rows], field, source, [])]

    def read_gold(
        self, columns: list[str], rows: list[dict], data_cfg: DictConfig, source: str
    ) -> list[Any]:
        return [None] * len(rows)

    def input_fields(self, data_cfg: DictConfig) -> list[str]:
        return [str(data_cfg.text_fields[0])]

    def input_example(self, raw: RawData, n: int = 2) -> list[list[Any]]:
        """The first lines of the data (a whole document would make a huge example)."""
        split = next((s for s in ("test", "dev", "train") if raw.size(s)), "train")
        lines = [line for doc in raw.texts[split][0] for line in doc.split("\n") if line.strip()]
        return [[line[:200]] for line in lines[:n]]

    def separator(self, tokenizer: Any) -> int | None:
        """The token between two documents of a block."""
        raise NotImplementedError

    def block_size(self, kwargs: dict[str, Any], tokenizer: Any = None) -> int:
        """Text tokens per block (special tokens aside)."""
        raise NotImplementedError

    def blocks(
        self, docs: list[str], tokenizer: Any, size: int, across: bool, offsets: bool = False
    ) -> list[dict[str, Any]]:
        """The documents cut into blocks of at most `size` tokens: each block's row (the
        document it starts in), ids, separator mask and (with `offsets`) character spans.
        `across`: the documents are concatenated first (a separator between two), else each is
        cut on its own."""
        enc = tokenizer(docs, add_special_tokens=False, return_offsets_mapping=offsets,
                        verbose=False)  # fmt: skip
        sep = self.separator(tokenizer) if across else None
        out: list[dict[str, Any]] = []
        ids: list[int] = []
        seps: list[int] = []
        spans: list[Any] = []
        rows: list[int] = []
        for row, doc_ids in enumerate(enc["input_ids"]):
            if not across:
                ids, seps, spans, rows = [], [], [], []
            elif ids and sep is not None:
                ids.append(sep)
                seps.append(1)
                spans.append((0, 0))
                rows.append(row)
            ids.extend(doc_ids)
            seps.extend([0] * len(doc_ids))
            rows.extend([row] * len(doc_ids))
            if offsets:
                spans.extend(tuple(o) for o in enc["offset_mapping"][row])
            if not across:
                out += _cut(ids, seps, spans, rows, size, offsets)
        if across:
            out = _cut(ids, seps, spans, rows, size, offsets)
        return out

    def encoded_notes(self, split: str, encoded: Any) -> list[str]:
        lengths = [len(ids) for ids in encoded["input_ids"]]
        if not lengths:
            return []
        return [
            f"{split}: {sum(lengths)} tokens in {len(lengths)} blocks of up to {max(lengths)} "
            "tokens"
        ]

    def merge(self, values: list[Any], encoded: Any) -> list[Any]:
        """Per input row, the sums of its blocks (evaluate); one value per block otherwise."""
        examples = _column(encoded, EXAMPLE)
        if examples is None or len(set(examples)) == len(examples):
            return values
        out: list[Any] = [None] * (max(examples) + 1)
        for value, example in zip(values, examples, strict=True):
            out[example] = value if out[example] is None else out[example] + value
        return out

    def golds(self, encoded: Any) -> list[Any]:
        return [None] * len(encoded)  # the labels are in the outputs: sums of token losses

    # -- model ---------------------------------------------------------------------------------
    def head_config(self, raw: RawData) -> dict[str, Any]:
        return {}

    # -- evaluation ----------------------------------------------------------------------------
    def batch_outputs(self, output: Any, labels: Any) -> Any:
        """Per block: the sum of its token losses, its predicted tokens, those guessed right."""
        import torch

        logits = model_tensors(output)[0].float()
        labels = labels.to(logits.device)
        if self.shift:
            logits, labels = logits[:, :-1], labels[:, 1:]
        valid = labels != -100
        # only the predicted positions (15 % of them for masked LM) go through the softmax
        picked, gold = logits[valid], labels[valid]
        loss = torch.nn.functional.cross_entropy(picked, gold, reduction="none")
        row = valid.nonzero()[:, 0]
        zeros = torch.zeros(logits.shape[0], dtype=torch.float64, device=logits.device)
        total = zeros.index_add(0, row, loss.double())
        right = zeros.index_add(0, row, (picked.argmax(-1) == gold).double())
        return torch.stack((total, valid.sum(1).double(), right), dim=1)

    def metrics(self, outputs: list[Any], labels: list[Any], split: str) -> dict[str, float]:
        import numpy as np

        kept = [o for o in outputs if o is not None]
        total, tokens, right = np.asarray(kept, dtype=np.float64).reshape(-1, 3).sum(0)
        if tokens == 0:
            nan = float("nan")
            return {"loss": nan, "perplexity": nan, "accuracy": nan}
        loss = float(total / tokens)
        return {"loss": loss, "perplexity": _exp(loss), "accuracy": float(right / tokens)}

    # -- using the trained model ---------------------------------------------------------------
    def encode_gold_inputs(
        self, texts: list[list[str]], tokenizer: Any, kwargs: dict[str, Any]
    ) -> dict[str, list]:
        """Each input row cut into blocks on its own, with labels: `expkit evaluate` scores
        the loss of every row."""
        raise NotImplementedError

    def predict_batch(
        self, model: Any, batch: dict[str, Any], tokenizer: Any, scoring: bool
    ) -> Any:
        if scoring:  # evaluate: the loss sums of each block, as in training
            out = model(**batch)
            rows = list(self.batch_outputs(out, batch["labels"]).cpu().numpy())
            return rows, rows
        return self.generate(model, batch, tokenizer), None

    def generate(self, model: Any, batch: dict[str, Any], tokenizer: Any) -> list[Any]:
        """Predictions for a batch of inputs (fill masks, continue prompts)."""
        raise NotImplementedError

    def prediction(self, score: Any, inputs: list[Any]) -> dict[str, Any]:
        if isinstance(score, dict):
            return self.written(score, inputs)
        total, tokens, _right = (float(v) for v in score) if score is not None else (0, 0, 0)
        if not tokens:  # a blank row, or (masked LM) a short one where no token was masked
            return {"loss": None, "perplexity": None, "tokens": 0}
        loss = total / tokens
        return {"loss": loss, "perplexity": _exp(loss), "tokens": int(tokens)}

    def written(self, score: dict[str, Any], inputs: list[Any]) -> dict[str, Any]:
        return score


def _exp(loss: float) -> float:
    return math.exp(loss) if loss < 700 else math.inf


def _cut(
    ids: list[int], seps: list[int], spans: list, rows: list[int], size: int, offsets: bool
) -> list[dict[str, Any]]:
    out = []
    for start in range(0, len(ids), size):
        block = {"row": rows[start], "ids": ids[start : start + size],
                 "seps": seps[start : start + size]}  # fmt: skip
        if offsets:
            block["spans"] = spans[start : start + size]
        out.append(block)
    return out


class MaskedLMTask(LanguageModelingTask):
    name = "masked_lm"
    model_class: ClassVar[str] = "AutoModelForMaskedLM"
    peft_task_type: ClassVar[str | None] = None  # peft has no masked-LM type: its plain model

    def check(self, cfg: DictConfig) -> list[str]:
        errors = super().check(cfg)
        t = cfg.task
        if not 0.0 < float(t.mlm_probability) < 1.0:
            errors.append(
                f"task.mlm_probability={t.mlm_probability} must be in (0, 1) (the share of "
                "tokens masked; BERT's is 0.15)"
            )
        if int(t.top_k) < 1:
            errors.append(f"task.top_k={t.top_k} must be 1 or more")
        return errors

    def check_data(self, raw: RawData, cfg: DictConfig) -> None:
        """A tokenizer with a mask token (and a fast one for whole-word masking)."""
        from expkit.model import build_tokenizer, tokenizer_source

        tokenizer = build_tokenizer(cfg.model)
        if tokenizer.mask_token is None:
            source, key = tokenizer_source(cfg.model)
            raise ConfigError(
                f"task=masked_lm needs a tokenizer with a mask token; the one of '{source}' "
                f"({key}) has none (a decoder such as GPT-2 learns with task=causal_lm)"
            )
        if cfg.task.whole_word_mask:
            check_fast_tokenizer(tokenizer, self.name, "whole-word masking reads word offsets")

    def encode_kwargs(self, data_cfg: DictConfig) -> dict[str, Any]:
        t = self.cfg
        return {"max_length": int(data_cfg.max_length),
                "line_by_line": bool(data_cfg.line_by_line),
                "mlm_probability": float(t.mlm_probability),
                "whole_word_mask": bool(t.whole_word_mask),
                "eval_mask_seed": int(t.eval_mask_seed)}  # fmt: skip

    def separator(self, tokenizer: Any) -> int | None:
        return tokenizer.sep_token_id if tokenizer.sep_token_id is not None else (
            tokenizer.eos_token_id)  # fmt: skip

    def masker(self, tokenizer: Any) -> Any:
        """transformers' masking of task.mlm_probability of the tokens (whole words: all
        [MASK], as transformers does for them)."""
        from transformers import DataCollatorForLanguageModeling

        whole = bool(self.cfg.whole_word_mask)
        replace = {"mask_replace_prob": 1.0, "random_replace_prob": 0.0} if whole else {}
        return DataCollatorForLanguageModeling(
            tokenizer, mlm=True, mlm_probability=float(self.cfg.mlm_probability),
            whole_word_mask=whole, **replace,
        )  # fmt: skip

    @staticmethod
    def _wrappers(tokenizer: Any) -> tuple[list[int], list[int]]:
        """The special tokens the tokenizer puts before and after one text ([CLS], [SEP])."""
        probe = "a"
        bare = tokenizer(probe, add_special_tokens=False)["input_ids"]
        full = tokenizer(probe)["input_ids"]
        at = next(i for i in range(len(full) - len(bare) + 1) if full[i : i + len(bare)] == bare)
        return full[:at], full[at + len(bare) :]

    def _features(
        self, blocks: list[dict[str, Any]], tokenizer: Any, example_of: str
    ) -> dict[str, list]:
        """Model columns of the blocks, each wrapped in the tokenizer's special tokens."""
        before, after = self._wrappers(tokenizer)
        types = "token_type_ids" in tokenizer.model_input_names
        out: dict[str, list] = {"input_ids": [], "attention_mask": [], SPECIAL: [], EXAMPLE: []}
        if types:
            out["token_type_ids"] = []
        spans = "spans" in blocks[0] if blocks else False
        if spans:
            out[OFFSETS] = []
        for number, block in enumerate(blocks):
            ids = before + block["ids"] + after
            out["input_ids"].append(ids)
            out["attention_mask"].append([1] * len(ids))
            out[SPECIAL].append([1] * len(before) + block["seps"] + [1] * len(after))
            out[EXAMPLE].append(number if example_of == "block" else block["row"])
            if types:
                out["token_type_ids"].append([0] * len(ids))
            if spans:
                out[OFFSETS].append([[0, 0]] * len(before) + [list(s) for s in block["spans"]]
                                    + [[0, 0]] * len(after))  # fmt: skip
        return out

    def block_size(self, kwargs: dict[str, Any], tokenizer: Any = None) -> int:
        return int(kwargs["max_length"]) - tokenizer.num_special_tokens_to_add(pair=False)

    def encode(
        self, raw: RawData, split: str, tokenizer: Any, kwargs: dict[str, Any]
    ) -> dict[str, list]:
        whole = bool(kwargs["whole_word_mask"])
        if whole:
            check_fast_tokenizer(tokenizer, self.name, "whole-word masking reads word offsets")
        blocks = self.blocks(raw.texts[split][0], tokenizer, self.block_size(kwargs, tokenizer),
                             across=not kwargs["line_by_line"], offsets=whole)  # fmt: skip
        out = self._features(blocks, tokenizer, "block")
        if split == "train":
            return out  # masked anew each epoch, by the collator
        return self._masked(out, tokenizer, kwargs, split)

    def _masked(
        self, out: dict[str, list], tokenizer: Any, kwargs: dict[str, Any], split: str
    ) -> dict[str, list]:
        """The blocks masked once, from task.eval_mask_seed: labels where a token is to be
        guessed."""
        masker = self.masker(tokenizer)
        offsets = out.pop(OFFSETS, None)
        specials = out.pop(SPECIAL)
        inputs, labels = [], []
        for number, (ids, special) in enumerate(zip(out["input_ids"], specials, strict=True)):
            seed = mixed_seed(kwargs["eval_mask_seed"], _SPLIT_CODES[split], number)
            spans = offsets[number] if offsets is not None else None
            masked, label = mask_block(masker, ids, special, spans, seed)
            inputs.append(masked)
            labels.append(label)
        out["input_ids"], out["labels"] = inputs, labels
        return out

    def encode_gold_inputs(
        self, texts: list[list[str]], tokenizer: Any, kwargs: dict[str, Any]
    ) -> dict[str, list]:
        whole = bool(kwargs["whole_word_mask"])
        size = self.block_size(kwargs, tokenizer)
        blocks = self.blocks([str(t) for t in texts[0]], tokenizer, size, across=False,
                             offsets=whole)  # fmt: skip
        return self._masked(self._features(blocks, tokenizer, "row"), tokenizer, kwargs, "input")

    def encode_inputs(
        self, texts: list[list[str]], tokenizer: Any, kwargs: dict[str, Any]
    ) -> dict[str, list]:
        """Texts with the tokenizer's mask token where a word is to be guessed."""
        enc = tokenizer([str(t) for t in texts[0]], truncation=True,
                        max_length=int(kwargs["max_length"]))  # fmt: skip
        out = {k: list(v) for k, v in enc.items()}
        out[EXAMPLE] = list(range(len(out["input_ids"])))
        return out

    def collator(self, tokenizer: Any) -> Any:
        masker = self.masker(tokenizer) if tokenizer.mask_token is not None else None
        return LMCollator(tokenizer, masker, self.seed)

    def generate(self, model: Any, batch: dict[str, Any], tokenizer: Any) -> list[Any]:
        """The `task.top_k` likeliest tokens at each mask token of each input."""
        import torch

        inputs = {k: v for k, v in batch.items() if k != "labels"}
        logits = model_tensors(model(**inputs))[0].float()
        probs = torch.softmax(logits, dim=-1)
        k = int(self.cfg.top_k)
        out = []
        for row in range(logits.shape[0]):
            positions = (inputs["input_ids"][row] == tokenizer.mask_token_id).nonzero().flatten()
            masks = []
            for position in positions.tolist():
                top = torch.topk(probs[row, position], k)
                masks.append([
                    {"token": tokenizer.decode([i]).strip(), "score": float(p)}
                    for p, i in zip(top.values.tolist(), top.indices.tolist(), strict=True)
                ])  # fmt: skip
            out.append({"mask_token": tokenizer.mask_token, "masks": masks})
        return out

    def written(self, score: dict[str, Any], inputs: list[Any]) -> dict[str, Any]:
        """The text with each mask token replaced by its likeliest token, and the candidates."""
        text = str(inputs[0])
        for candidates in score["masks"]:
            text = text.replace(score["mask_token"], candidates[0]["token"], 1)
        return {"filled": text, "masks": score["masks"]}


class CausalLMTask(LanguageModelingTask):
    name = "causal_lm"
    model_class: ClassVar[str] = "AutoModelForCausalLM"
    peft_task_type: ClassVar[str | None] = "CAUSAL_LM"
    shift = True

    def check(self, cfg: DictConfig) -> list[str]:
        errors = super().check(cfg)
        t = cfg.task
        if int(t.block_size) < 2:
            errors.append(f"task.block_size={t.block_size} must be 2 or more tokens")
        if int(t.max_new_tokens) < 1:
            errors.append(f"task.max_new_tokens={t.max_new_tokens} must be 1 or more")
        if float(t.temperature) <= 0:
            errors.append(f"task.temperature={t.temperature} must be above 0")
        if not 0.0 < float(t.top_p) <= 1.0:
            errors.append(f"task.top_p={t.top_p} must be in (0, 1]")
        return errors

    def check_data(self, raw: RawData, cfg: DictConfig) -> None:
        """task.block_size fits the model's positions."""
        from expkit.model import model_config

        positions = _positions(model_config(cfg.model, {}))
        if positions is not None and int(cfg.task.block_size) > positions:
            raise ConfigError(
                f"task.block_size={cfg.task.block_size} is beyond the model's {positions} "
                f"positions (max_position_embeddings); use task.block_size={positions} or less"
            )

    def encode_kwargs(self, data_cfg: DictConfig) -> dict[str, Any]:
        return {"block_size": int(self.cfg.block_size),
                "line_by_line": bool(data_cfg.line_by_line)}  # fmt: skip

    def separator(self, tokenizer: Any) -> int | None:
        return tokenizer.eos_token_id if tokenizer.eos_token_id is not None else (
            tokenizer.sep_token_id)  # fmt: skip

    def block_size(self, kwargs: dict[str, Any], tokenizer: Any = None) -> int:
        return int(kwargs["block_size"])

    @staticmethod
    def _features(blocks: list[dict[str, Any]], example_of: str) -> dict[str, list]:
        ids = [b["ids"] for b in blocks]
        return {
            "input_ids": ids,
            "attention_mask": [[1] * len(i) for i in ids],
            "labels": [list(i) for i in ids],  # the model shifts them: token t predicts t + 1
            EXAMPLE: [n if example_of == "block" else b["row"] for n, b in enumerate(blocks)],
        }

    def encode(
        self, raw: RawData, split: str, tokenizer: Any, kwargs: dict[str, Any]
    ) -> dict[str, list]:
        blocks = self.blocks(raw.texts[split][0], tokenizer, self.block_size(kwargs),
                             across=not kwargs["line_by_line"])  # fmt: skip
        return self._features(blocks, "block")

    def encode_gold_inputs(
        self, texts: list[list[str]], tokenizer: Any, kwargs: dict[str, Any]
    ) -> dict[str, list]:
        blocks = self.blocks([str(t) for t in texts[0]], tokenizer, self.block_size(kwargs),
                             across=False)  # fmt: skip
        return self._features(blocks, "row")

    def encode_inputs(
        self, texts: list[list[str]], tokenizer: Any, kwargs: dict[str, Any]
    ) -> dict[str, list]:
        """Prompts, as training saw text (no special tokens)."""
        ids = tokenizer([str(t) for t in texts[0]], add_special_tokens=False)["input_ids"]
        ids = [i or [self.separator(tokenizer)] for i in ids]  # an empty prompt: start a text
        return {"input_ids": ids, "attention_mask": [[1] * len(i) for i in ids],
                EXAMPLE: list(range(len(ids)))}  # fmt: skip

    def collator(self, tokenizer: Any) -> Any:
        return LMCollator(tokenizer)

    def generate(self, model: Any, batch: dict[str, Any], tokenizer: Any) -> list[Any]:
        """Each prompt continued by task.max_new_tokens tokens: greedy, or sampled with a seed
        of the run's seed and the prompt (the same prompt gives the same text in any batch)."""
        import zlib

        import torch

        t = self.cfg
        new = int(t.max_new_tokens)
        positions = _positions(model.config)
        if positions is not None and new >= positions:
            raise ExpkitError(
                f"task.max_new_tokens={new} leaves no room for a prompt in the model's "
                f"{positions} positions; give task.max_new_tokens={positions - 1} or less"
            )
        sampling = {"do_sample": True, "temperature": float(t.temperature),
                    "top_p": float(t.top_p)} if t.do_sample else {"do_sample": False}  # fmt: skip
        out = []
        for row in range(batch["input_ids"].shape[0]):
            ids = batch["input_ids"][row][batch["attention_mask"][row].bool()]
            if positions is not None:
                ids = ids[-(positions - new) :]  # the end of a long prompt
            if t.do_sample:
                prompt = zlib.crc32(str(ids.tolist()).encode("ascii"))
                torch.manual_seed(mixed_seed(self.seed, prompt))
            generated = model.generate(
                input_ids=ids[None], attention_mask=torch.ones_like(ids)[None],
                max_new_tokens=new, pad_token_id=tokenizer.pad_token_id, **sampling,
            )  # fmt: skip
            tokens = generated[0, len(ids) :]
            out.append({"generated": tokenizer.decode(tokens, skip_special_tokens=True),
                        "new_tokens": int(tokens.numel())})  # fmt: skip
        return out


def _positions(config: Any) -> int | None:
    """The positions a model's config allows (max_position_embeddings, GPT-2's n_positions)."""
    for name in ("max_position_embeddings", "n_positions", "n_ctx"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None
