"""Reusable UI pieces shared by the pages: messages, loading wrappers, method explanations."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from dash import dcc, html

# One sentence per method, in plain language, with the paper (shown under the selectors).
METHODS: dict[str, dict[str, str]] = {
    "integrated_gradients": {
        "label": "Integrated gradients",
        "what": "Adds up the gradient along a straight path from a neutral baseline to this "
                "input, so each element's share sums to how far the output moved.",
        "paper": "Sundararajan, Taly & Yan, Axiomatic Attribution for Deep Networks, ICML 2017",
        "url": "https://arxiv.org/abs/1703.01365",
    },
    "saliency": {
        "label": "Saliency (gradient)",
        "what": "The size of the gradient: how strongly a small change in each element would "
                "move the output (always non-negative, no direction).",
        "paper": "Simonyan, Vedaldi & Zisserman, Deep Inside Convolutional Networks, ICLR 2014",
        "url": "https://arxiv.org/abs/1312.6034",
    },
    "input_x_gradient": {
        "label": "Input × gradient",
        "what": "Each element times its gradient: a first-order estimate of how much the "
                "element contributes compared with setting it to zero.",
        "paper": "Shrikumar et al., Not Just a Black Box, 2016 (arXiv:1605.01713)",
        "url": "https://arxiv.org/abs/1605.01713",
    },
}
INTERACTIONS_NOTE = {
    "what": "The mixed second derivative ∂²f/∂a∂b: how much one element's effect on the output "
            "changes when an element of the other modality changes. Zero means the two are "
            "combined additively.",
    "paper": "Janizek, Sturmfels & Lee, Explaining Explanations: Axiomatic Feature "
             "Interactions for Deep Networks, JMLR 2021; Liang et al., MultiViz, ICLR 2023",
    "url": "https://arxiv.org/abs/2002.04138",
}
ROLLOUT_NOTE = {
    "what": "Attention rollout multiplies the attention of all layers (plus the residual "
            "path) to estimate how much each input token flows into each position.",
    "paper": "Abnar & Zuidema, Quantifying Attention Flow in Transformers, ACL 2020",
    "url": "https://arxiv.org/abs/2005.00928",
}
OUTPUTS = {
    "logits": "logits (raw scores)",
    "log_softmax": "log-probabilities",
    "softmax": "probabilities",
}
RELU_MESSAGE = ("This model is piecewise linear (ReLU or max-pooling), so its second "
                "derivatives are zero almost everywhere and the interaction map of its logits "
                "is empty. That does not mean the modalities do not interact: the softmax "
                "couples them. Explain the log-probabilities instead.")


def alert(message: str, *, kind: str = "error") -> html.Div:
    """A message box; ``kind`` is error | info | warning."""
    return html.Div(message, className=f"alert alert-{kind}",
                    role="alert" if kind == "error" else "status")


def loading(component_id: str, children: Any = None, **kwargs: Any) -> dcc.Loading:
    """Every API-backed area shows a spinner while its callback runs."""
    return dcc.Loading(html.Div(id=component_id, children=children, **kwargs),
                       type="circle", color="#0b6bcb", delay_show=150)


def reference(note: dict[str, str]) -> html.P:
    """One-sentence explanation plus the paper, linked."""
    return html.P(className="method-note", children=[
        note["what"], " ", html.A(note["paper"], href=note["url"], target="_blank",
                                  rel="noopener noreferrer", className="paper")])


def human_bytes(n: int | None) -> str:
    if n is None:
        return "—"
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"


def gather(**calls: Callable[[], Any]) -> dict[str, Any]:
    """Run independent API calls at the same time; the first error (an ``ApiError``) raises.

    A page that needs the instance, its prediction and the model's spec waits for the
    slowest call instead of their sum.
    """
    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        futures = {name: pool.submit(call) for name, call in calls.items()}
        return {name: future.result() for name, future in futures.items()}
