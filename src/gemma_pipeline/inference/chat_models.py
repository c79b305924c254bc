"""One chat interface over two engines: transformers (base, base + adapter, merged folder) and
llama.cpp (a GGUF file).

Both render a question through the chat template exactly as training rendered its prompts
(``prompting``), give the prompt exactly one BOS, stop at ``<eos>`` or ``<end_of_turn>``, and
stream one text piece per generated token. Greedy decoding is the default: the same question,
the same answer, on either engine and through llama.cpp's server.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from tqdm.auto import tqdm
from transformers import GenerationConfig
from transformers.generation.streamers import BaseStreamer

from gemma_pipeline.modeling.chat_template import GEMMA_CHAT_TEMPLATE
from gemma_pipeline.prompting import ChatFormat, encode_prompts, render_chat

from .decoding import Decoding
from .errors import UserInputError

#: Gemma ends a model turn with this token; it stops generation beside ``<eos>``.
END_OF_TURN = "<end_of_turn>"

Turns = Sequence[tuple[str, str]]


class ChatModel(Protocol):
    """What ``ask``, the server test and the web demo need from a loaded model."""

    description: str  # what was loaded, for logs and error messages
    context_length: int  # prompt + new tokens must fit in it

    def render(self, user_message: str, turns: Turns = ()) -> str: ...

    def encode(self, text: str) -> list[int]: ...

    def stream(self, prompt_ids: list[int], decoding: Decoding) -> Iterator[str]: ...

    def generate(
        self, prompts: Sequence[list[int]], decoding: Decoding, *, batch_size: int = 8
    ) -> list[str]: ...


def chat_prompt_ids(model: ChatModel, user_message: str, decoding: Decoding) -> list[int]:
    """The chat prompt's token ids, after checking the message and that the answer fits."""
    if not user_message.strip():
        raise UserInputError("The prompt is empty: nothing to ask.")
    ids = model.encode(model.render(user_message))
    check_fits(len(ids), decoding.max_new_tokens, model.context_length)
    return ids


def check_fits(prompt_tokens: int, max_new_tokens: int, context_length: int) -> None:
    if prompt_tokens + max_new_tokens > context_length:
        raise UserInputError(
            f"The prompt is {prompt_tokens} tokens; with max_new_tokens={max_new_tokens} it needs "
            f"{prompt_tokens + max_new_tokens}, more than the model's context of "
            f"{context_length} tokens. Shorten the prompt or lower --max-new-tokens."
        )


class _IncrementalText:
    """Decodes a growing list of token ids into text pieces, one per token.

    Decoding token by token would split multi-byte characters (and SentencePiece's leading
    spaces); decoding the whole and emitting what is new keeps the joined pieces exact.
    """

    def __init__(self, decode) -> None:
        self._decode = decode
        self._ids: list[int] = []
        self._emitted = ""

    def push(self, token_id: int) -> str:
        self._ids.append(token_id)
        text = self._decode(self._ids)
        if text.endswith("\ufffd"):  # a character still incomplete: wait for its next byte
            return ""
        piece, self._emitted = text[len(self._emitted) :], text
        return piece

    def rest(self) -> str:
        """What is held back at the end (a byte sequence that never became a character)."""
        text = self._decode(self._ids)
        piece, self._emitted = text[len(self._emitted) :], text
        return piece


# --- transformers -----------------------------------------------------------------------------


class _TokenQueue(BaseStreamer):
    """Hands the token ids ``generate`` produces to another thread, prompt excluded."""

    def __init__(self) -> None:
        self.tokens: queue.Queue[int | None] = queue.Queue()
        self._prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self._prompt_seen:  # generate's first call carries the prompt
            self._prompt_seen = True
            return
        for token in value.reshape(-1).tolist():
            self.tokens.put(int(token))

    def end(self) -> None:
        self.tokens.put(None)


@dataclass
class TransformersChatModel:
    model: Any
    chat: ChatFormat
    description: str
    stop_ids: list[int] = field(init=False)

    def __post_init__(self) -> None:
        tokenizer = self.chat.tokenizer
        self.stop_ids = [tokenizer.eos_token_id]
        if END_OF_TURN in tokenizer.get_vocab():
            self.stop_ids.append(tokenizer.convert_tokens_to_ids(END_OF_TURN))

    @property
    def tokenizer(self) -> Any:
        return self.chat.tokenizer

    @property
    def context_length(self) -> int:
        config = self.model.config
        return int(
            getattr(config, "max_position_embeddings", None)
            or config.text_config.max_position_embeddings
        )

    def render(self, user_message: str, turns: Turns = ()) -> str:
        return self.chat.render(turns, user_message)

    def score_question(self, question: Mapping[str, Any], *, max_batch_tokens: int) -> Any:
        """A multiple-choice question's ``OptionScores``: its training-format prompt, scored by
        the evaluation engine as `evaluate` scores held-out questions."""
        from gemma_pipeline.evaluation.heldout import score_options

        prompt = self.chat.prompt(question)
        check_fits(len(self.encode(prompt)), 1, self.context_length)
        return score_options(
            self.model,
            self.tokenizer,
            prompt,
            question["choices"],
            max_batch_tokens=max_batch_tokens,
        )

    def encode(self, text: str) -> list[int]:
        return encode_prompts(self.tokenizer, [text])[0]

    def _generation_config(self, decoding: Decoding) -> GenerationConfig:
        pad = self.tokenizer.pad_token_id
        common = {
            "max_new_tokens": decoding.max_new_tokens,
            "eos_token_id": self.stop_ids,
            "pad_token_id": pad if pad is not None else self.stop_ids[0],
        }
        if decoding.greedy:
            return GenerationConfig(do_sample=False, **common)
        if decoding.seed is not None:
            torch.manual_seed(decoding.seed)
        return GenerationConfig(
            do_sample=True,
            temperature=decoding.temperature,
            top_p=decoding.top_p,
            top_k=0,
            **common,
        )

    def _device(self) -> torch.device:
        return next(self.model.parameters()).device

    def stream(self, prompt_ids: list[int], decoding: Decoding) -> Iterator[str]:
        streamer = _TokenQueue()
        failure: list[BaseException] = []

        def run() -> None:
            try:
                with torch.inference_mode():
                    self.model.generate(
                        input_ids=torch.tensor([prompt_ids], device=self._device()),
                        attention_mask=torch.ones(
                            (1, len(prompt_ids)), dtype=torch.long, device=self._device()
                        ),
                        generation_config=self._generation_config(decoding),
                        streamer=streamer,
                    )
            except BaseException as error:  # re-raised in the caller's thread below
                failure.append(error)
                streamer.end()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        text = _IncrementalText(lambda ids: self.tokenizer.decode(ids, skip_special_tokens=True))
        while (token := streamer.tokens.get()) is not None:
            yield text.push(token)
        if rest := text.rest():
            yield rest
        thread.join()
        if failure:
            raise failure[0]

    @torch.inference_mode()
    def generate(
        self, prompts: Sequence[list[int]], decoding: Decoding, *, batch_size: int = 8
    ) -> list[str]:
        """Left-padded batches of similar length; answers in the order of ``prompts``."""
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
        answers = [""] * len(prompts)
        config = self._generation_config(decoding)
        progress = tqdm(total=len(prompts), desc="ask", unit="question")
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            width = max(len(prompts[i]) for i in batch)
            input_ids = torch.full((len(batch), width), config.pad_token_id, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, i in enumerate(batch):
                input_ids[row, width - len(prompts[i]) :] = torch.tensor(prompts[i])
                mask[row, width - len(prompts[i]) :] = 1
            generated = self.model.generate(
                input_ids=input_ids.to(self._device()),
                attention_mask=mask.to(self._device()),
                generation_config=config,
            )
            for row, i in enumerate(batch):
                answers[i] = self.tokenizer.decode(generated[row, width:], skip_special_tokens=True)
            progress.update(len(batch))
        progress.close()
        return answers


# --- llama.cpp --------------------------------------------------------------------------------


class LlamaCppChatModel:
    """A GGUF file in llama.cpp, prompted and decoded as its OpenAI-compatible server does it
    (same rendering, same tokenization, greedy at temperature 0, no repeat penalty)."""

    def __init__(self, path: str, *, context_length: int, n_threads: int | None = None) -> None:
        import llama_cpp

        self.llm = llama_cpp.Llama(
            model_path=str(path),
            n_ctx=context_length,
            n_threads=n_threads or os.cpu_count(),
            verbose=False,
        )
        self.description = f"GGUF {path}"
        self.context_length = min(
            self.llm.n_ctx(), llama_cpp.llama_model_n_ctx_train(self.llm.model)
        )
        # The embedded GGUF carries no template: Gemma's, as everywhere else in the project.
        self.chat_template = self.llm.metadata.get("tokenizer.chat_template", GEMMA_CHAT_TEMPLATE)
        self._vocab = llama_cpp.llama_model_get_vocab(self.llm.model)
        self.special_tokens = {
            "bos_token": self._token_text(self.llm.token_bos()),
            "eos_token": self._token_text(self.llm.token_eos()),
        }

    def _token_text(self, token_id: int) -> str:
        return self.llm.detokenize([token_id], special=True).decode("utf-8")

    def render(self, user_message: str, turns: Turns = ()) -> str:
        return render_chat(self.chat_template, turns, user_message, self.special_tokens)

    def encode(self, text: str) -> list[int]:
        ids = self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        bos = self.llm.token_bos()
        return ids if ids[:1] == [bos] else [bos, *ids]

    def stream(self, prompt_ids: list[int], decoding: Decoding) -> Iterator[str]:
        import llama_cpp

        if decoding.seed is not None:
            self.llm.set_seed(decoding.seed)
        # Bytes that never form a character are dropped, as llama.cpp's server drops them.
        text = _IncrementalText(
            lambda ids: self.llm.detokenize(ids).decode("utf-8", errors="ignore")
        )
        tokens = self.llm.generate(
            prompt_ids,
            temp=decoding.temperature,
            top_p=decoding.top_p,
            top_k=0,
            min_p=0.0,
            repeat_penalty=1.0,
        )
        for produced, token in enumerate(tokens, start=1):
            if llama_cpp.llama_vocab_is_eog(self._vocab, token):
                break
            yield text.push(token)
            if produced == decoding.max_new_tokens:
                break
        if rest := text.rest():
            yield rest

    def generate(
        self, prompts: Sequence[list[int]], decoding: Decoding, *, batch_size: int = 8
    ) -> list[str]:
        """One prompt at a time (llama-cpp-python decodes one sequence); ``batch_size`` unused."""
        return [
            "".join(self.stream(ids, decoding))
            for ids in tqdm(prompts, desc="ask", unit="question")
        ]
