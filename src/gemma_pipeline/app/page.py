"""The Gradio page: three tabs over one ``SideBySide`` session.

A user's mistake (an empty or too-long question) is shown in the tab's status line; the app
keeps serving. Errors in the models themselves still surface as Gradio's error toast.
"""

from __future__ import annotations

import random
from typing import Any

from gemma_pipeline.inference.errors import UserInputError

from .render import LABELS, header_markdown, heldout_html, results_frame
from .session import SideBySide

TASK_CHOICES = ["either", "mmlu", "mathqa"]


def build_page(session: SideBySide) -> Any:
    import gradio as gr

    rng = random.Random()

    def ask(question: str, max_new_tokens: float):
        yield "", "", "Generating…"
        try:
            for base, finetuned in session.answer_both(question or "", int(max_new_tokens)):
                yield base, finetuned, "Generating…"
        except UserInputError as error:
            yield "", "", f"⚠️ {error}"
            return
        yield base, finetuned, "Done: both answers are greedy, with Gemma's chat template."

    def sample(task: str, draws: int):
        draws += 1
        try:
            question = session.sample_question(None if task == "either" else task, rng)
            answer = session.score(question)
        except UserInputError as error:
            return "", f"⚠️ {error}", draws
        right = [LABELS[m] for m, v in answer.verdicts.items() if v.correct]
        status = f"Question {draws} · right: {', '.join(right) if right else 'neither'}."
        return heldout_html(answer), status, draws

    with gr.Blocks(title="gemma-pipeline · base vs fine-tuned") as page:
        gr.Markdown(header_markdown(session), elem_id="header")
        with gr.Tab("Ask both", id="ask"):
            question = gr.Textbox(
                label="Your question",
                placeholder="What is the capital of France?",
                lines=3,
                elem_id="question",
            )
            with gr.Row():
                max_new = gr.Slider(
                    8, 512, value=session.params.max_new_tokens, step=8, label="max new tokens"
                )
                ask_button = gr.Button("Ask both", variant="primary", elem_id="ask-button")
            with gr.Row(equal_height=True):
                base_answer = gr.Textbox(
                    label=f"Base · {session.base_name}",
                    lines=10,
                    interactive=False,
                    elem_id="base-answer",
                )
                ft_answer = gr.Textbox(
                    label=f"Fine-tuned · adapter {session.adapter_version}",
                    lines=10,
                    interactive=False,
                    elem_id="finetuned-answer",
                )
            ask_status = gr.Markdown(elem_id="ask-status")
            ask_button.click(ask, [question, max_new], [base_answer, ft_answer, ask_status])
            question.submit(ask, [question, max_new], [base_answer, ft_answer, ask_status])
        with gr.Tab("Held-out question", id="heldout"):
            gr.Markdown(
                f"A question of the run's `{session.results.split}` split: training never saw "
                "it. Both models rate every option as `evaluate` does."
            )
            with gr.Row():
                task = gr.Radio(TASK_CHOICES, value="either", label="task", scale=2)
                sample_button = gr.Button(
                    "Sample a held-out question",
                    variant="primary",
                    elem_id="sample-button",
                    scale=1,
                )
            heldout = gr.HTML(elem_id="heldout-panel")
            heldout_status = gr.Markdown(elem_id="heldout-status")
            draws = gr.State(0)
            sample_button.click(sample, [task, draws], [heldout, heldout_status, draws])
        with gr.Tab("Results", id="results"):
            gr.Markdown(
                f"Evaluation `{session.results.version}`: held-out metrics, base against "
                "fine-tuned (± one standard error; * marks a change beyond two), as in the report."
            )
            gr.Dataframe(results_frame(session), interactive=False, elem_id="results-table")
            if session.results.per_subject_plot is not None:
                gr.Image(
                    str(session.results.per_subject_plot),
                    label="letter accuracy per subject",
                    interactive=False,
                    elem_id="per-subject",
                )
    return page


def launch(session: SideBySide, *, host: str, port: int, block: bool = True) -> Any:
    import gradio as gr

    page = build_page(session)
    page.queue(default_concurrency_limit=1)  # one generation at a time: the CPU is shared
    return page.launch(
        server_name=host,
        server_port=port,
        prevent_thread_lock=not block,
        show_error=True,
        theme=gr.themes.Soft(primary_hue="blue"),
    )
