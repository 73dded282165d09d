"""The one place where prompts, answer letters and label orders are defined.

The lm-eval tasks, the trainer and the leaderboard all import from here, so a
model is trained on exactly the text it is evaluated on.  Changing any template
or label order is a change of PROMPT_VERSION (it is recorded in every result).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

PROMPT_VERSION = "1"

DILEMMA_LABELS = ("FIRST", "SECOND")
ANECDOTE_LABELS = ("AUTHOR", "OTHER", "EVERYBODY", "NOBODY", "INFO")
BINARY_LABELS = ("RIGHT", "WRONG")


DEFAULT_MARKERS = "ABCDE"


def _letters(k: int) -> tuple[str, ...]:
    return tuple(DEFAULT_MARKERS[:k])


@dataclass(frozen=True)
class Prompt:
    """A multiple-choice prompt described as data; calling it on a document renders it.

    Rendered: the story (``story``), ``lead``, one line ``"<marker>. <option>"`` per option
    (``options``, or the dilemma's actions when None), ``tail``, then ``"Answer:"``.  In
    ``tail``, ``{choices}`` becomes the markers as "A, B or C" and ``{json}`` the JSON
    reply shape of the verbalized readout.
    """

    lead: str
    tail: str
    options: tuple[str, ...] | None = None
    markers: str = DEFAULT_MARKERS
    story: bool = False

    def __call__(self, doc: dict) -> str:
        texts = self.options if self.options is not None else [a["description"] for a in doc["actions"]]
        markers = self.markers[:len(texts)]
        lines = "".join(f"{m}. {text}\n" for m, text in zip(markers, texts))
        tail = self.tail.format(choices=", ".join(markers[:-1]) + " or " + markers[-1],
                                json="{" + ", ".join(f'"{m}": <percent>' for m in markers) + "}")
        return (_story(doc) if self.story else "") + self.lead + lines + tail + "Answer:"


def reorder_actions(doc: dict, perm: tuple[int, ...]) -> dict:
    """The dilemma with its actions presented in order ``perm`` (presented action i = original perm[i])."""
    return {**doc, "actions": [doc["actions"][i] for i in perm]}


def _story(doc: dict) -> str:
    return f"Title: {doc['title']}\n\n{doc['text'].strip()}\n\n"


# Scruples asked annotators which action is LESS ethical; gold_annotations[0]
# counts votes for the first action, so option A is actions[0].
dilemma_prompt = Prompt("Consider these two actions.\n", "Which action is less ethical? Answer with {choices}.\n")
ANECDOTE_OPTIONS = ("The author", "The other person or people", "Everybody involved", "Nobody",
                    "More information is needed to tell")
anecdote_prompt = Prompt("Who is in the wrong in this story?\n", "Answer with {choices}.\n", ANECDOTE_OPTIONS,
                         story=True)
# The mapping is spelled out: public code disagrees on whether "yes" means
# RIGHT or WRONG, so we avoid yes/no altogether.
anecdote_binary_prompt = Prompt("Did the author act rightly or wrongly?\n", "Answer with {choices}.\n",
                                ("The author was in the right", "The author was in the wrong"), story=True)


def prompt_fields(dataset: str, row: dict) -> dict:
    """The fields of a Scruples row that the prompts and the encoder baselines read: an lm-eval
    document carries only these (lm-eval writes every document into the samples file)."""
    if dataset == "dilemmas":
        return {"actions": [{"description": a["description"]} for a in row["actions"]]}
    return {"title": row["title"], "text": row["text"]}


def encoder_inputs(dataset: str, doc: dict) -> list:
    """What an encoder baseline reads (Scruples' baselines): one text per action for dilemmas
    (a two-choice ranker), the (title, text) pair for anecdotes (a classifier)."""
    if dataset == "dilemmas":
        return [a["description"] for a in doc["actions"]]
    return [doc["title"], doc["text"]]


def dilemma_counts(doc: dict) -> list:
    return list(doc["gold_annotations"])


def anecdote_counts(doc: dict) -> list:
    scores = doc["label_scores"]
    return [scores[label] for label in ANECDOTE_LABELS]


def binary_counts(doc: dict) -> list:
    scores = doc["binarized_label_scores"]
    return [scores[label] for label in BINARY_LABELS]


# Surface forms of an answer letter: lm-eval scores "<target_delimiter><letter>", i.e. " A"
# without a chat template and "A" with one; a model may put its mass on either.
LETTER_VARIANTS = ("{letter}", " {letter}")


def option_variants(spec: "TaskSpec", target_delimiter: str = " ") -> tuple[tuple[str, ...], ...]:
    """Per option, its surface strings as scored: the primary one (what lm-eval scores with
    ``target_delimiter``) first, then the other variants.

    This is the single definition of the answer tokens: the lm-eval tasks read every variant
    (``option_mass`` is the primary strings' mass, ``variant_mass`` the others'), and with the
    task option ``merge_variants`` an option's readout is the logsumexp over its variants;
    the trainer reads the same strings so that it trains on the readout that is evaluated.
    """
    out = []
    for letter in spec.letters:
        primary = f"{target_delimiter}{letter}"
        others = [form.format(letter=letter) for form in LETTER_VARIANTS]
        out.append((primary, *(o for o in others if o != primary)))
    return tuple(out)


@dataclass(frozen=True)
class TaskSpec:
    """Everything that defines one task apart from the data files."""

    name: str
    dataset: str  # "dilemmas" or "anecdotes": which Scruples file family
    labels: tuple[str, ...]  # label order = option order = vote-count order
    prompt: Callable[[dict], str]
    counts: Callable[[dict], list]  # human vote counts in label order
    counts_field: str  # the field the counts come from, for error messages
    # Presentation orders, each (name, permutation): presented option i is label perm[i].
    # One order (the data's) for plain tasks; several for order-debiased variants, which
    # read every order in one document and average the distributions mapped back.
    orders: tuple[tuple[str, tuple[int, ...]], ...] = ()
    base: str | None = None  # the task whose data and prompt a variant shares
    reorder: Callable[[dict, tuple[int, ...]], dict] | None = None  # a row with its options permuted
    # Agreement levels are cut on the human majority share at these two points
    # (low <= c1 < mid <= c2 < high); None: at the terciles of the evaluated documents.
    agreement_cuts: tuple[float, float] | None = None
    # How the model's distribution is read (moral_tasks.readouts): "logprob" (next-token
    # probabilities of the option labels), "verbalized", "sampling" or "answer".
    readout: str = "logprob"
    # The prompt template of a prompt-sensitivity variant ("default" for the base prompt) and its
    # option labels (empty: A, B, ...).
    template: str = "default"
    option_labels: tuple[str, ...] = ()

    @property
    def letters(self) -> tuple[str, ...]:
        return self.option_labels or _letters(len(self.labels))

    @property
    def presentation_orders(self) -> tuple[tuple[str, tuple[int, ...]], ...]:
        return self.orders or (("data", tuple(range(len(self.labels)))),)

    @property
    def base_name(self) -> str:
        return self.base or self.name


TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        # 5 votes on 2 options: majority shares 3/5, 4/5 and 5/5 fall in the three levels.
        TaskSpec("moral_dilemmas", "dilemmas", DILEMMA_LABELS, dilemma_prompt, dilemma_counts, "gold_annotations",
                 reorder=reorder_actions, agreement_cuts=(0.7, 0.9)),
        TaskSpec("moral_anecdotes", "anecdotes", ANECDOTE_LABELS, anecdote_prompt, anecdote_counts, "label_scores"),
        TaskSpec(
            "moral_anecdotes_binary",
            "anecdotes",
            BINARY_LABELS,
            anecdote_binary_prompt,
            binary_counts,
            "binarized_label_scores",
        ),
    )
}
"""The base tasks: one per label set and Scruples file family."""

VARIANTS: dict[str, TaskSpec] = {
    "moral_dilemmas_debiased": replace(TASKS["moral_dilemmas"], name="moral_dilemmas_debiased", base="moral_dilemmas",
                                       orders=(("AB", (0, 1)), ("BA", (1, 0)))),
}
"""Variants of a base task: same data and prompt, read differently (described here, by data)."""

GROUP = "moral_ambiguity"
"""The lm-eval group of the base tasks and the debiased variant (tasks/moral_ambiguity.yaml)."""

FULL_SUFFIX = "_full"
LM_EVAL_TASKS: dict[str, TaskSpec] = {
    name: spec for spec in (*TASKS.values(), *VARIANTS.values()) for name in (spec.name, spec.name + FULL_SUFFIX)
}
"""Every lm-eval task name we define -> its spec. ``<task>_full`` reports the full metric set
(the plain name the headline metrics); both score the same way."""


def request_layout(spec: TaskSpec, idx: int) -> tuple[str, int, int]:
    """What request ``idx`` of a document asks: ``(order name, variant index, label index)``.

    A document's requests run over orders, then surface variants (see :func:`option_variants`;
    0 = the string lm-eval scores), then presented options; presented option i of order
    ``perm`` is label ``perm[i]``. A model type that answers from the document (not the text)
    reads its answer for request ``idx`` from this.
    """
    k, n_variants = len(spec.labels), len(LETTER_VARIANTS)
    order, rest = divmod(idx, n_variants * k)
    variant, option = divmod(rest, k)
    name, perm = spec.presentation_orders[order]
    return name, variant, perm[option]


def get_task(name: str) -> TaskSpec:
    """The spec of a base task, a variant or any lm-eval task name of :data:`LM_EVAL_TASKS`."""
    try:
        return LM_EVAL_TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(LM_EVAL_TASKS)}") from None


def base_task(name: str) -> str:
    """The base task (data, prompt, labels) of any task name: e.g. moral_dilemmas for moral_dilemmas_debiased."""
    return get_task(name).base_name


# ---------------------------------------------------------------- readouts and prompt templates
# Prompts of the generation readouts (moral_tasks.readouts) and of the prompt-sensitivity
# templates. The sampling and answer readouts ask the log-probability tasks' own prompts.

_JSON_REPLY = "Reply with only a JSON object: {json}\n"
dilemma_verbalized_prompt = Prompt(
    "Consider these two actions.\n",
    "Suppose 100 people were asked which action is less ethical. What percentage of them would choose each?\n"
    + _JSON_REPLY)
anecdote_verbalized_prompt = Prompt("Suppose 100 people read this story and were asked who is in the wrong:\n",
                                    "What percentage of them would give each answer?\n" + _JSON_REPLY,
                                    ANECDOTE_OPTIONS, story=True)
dilemma_paraphrase_prompt = Prompt("Here are two things a person might do.\n",
                                   "Of the two, which one is morally worse? Reply {choices}.\n")
dilemma_numbered_prompt = replace(dilemma_prompt, markers="12")
anecdote_paraphrase_prompt = Prompt(
    "Who behaved badly here?\n", "Reply {choices}.\n",
    ("The person telling the story", "The others in the story", "All of them", "No one",
     "It cannot be judged without more information"), story=True)
anecdote_numbered_prompt = replace(anecdote_prompt, markers="12345")


def _readout(base: str, readout: str, prompt: Callable[[dict], str] | None = None) -> TaskSpec:
    spec = TASKS[base]
    return replace(spec, name=f"{base}_{readout}", base=base, readout=readout, prompt=prompt or spec.prompt)


def _template(base: str, template: str, prompt: Prompt) -> TaskSpec:
    # The option labels are the prompt's own markers (1, 2, ... for a numbered template).
    k = len(TASKS[base].labels)
    labels = tuple(prompt.markers[:k]) if prompt.markers != DEFAULT_MARKERS else ()
    return replace(TASKS[base], name=f"{base}_{template}", base=base, template=template, prompt=prompt,
                   option_labels=labels)


READOUT_TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        _readout("moral_dilemmas", "verbalized", dilemma_verbalized_prompt),
        _readout("moral_anecdotes", "verbalized", anecdote_verbalized_prompt),
        _readout("moral_dilemmas", "sampling"),
        _readout("moral_anecdotes", "sampling"),
        _readout("moral_dilemmas", "answer"),
        _readout("moral_anecdotes", "answer"),
    )
}
"""The generation readouts of the base tasks (moral_tasks.readouts); no ``_full`` twins."""

TEMPLATES: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        _template("moral_dilemmas", "paraphrase", dilemma_paraphrase_prompt),
        _template("moral_dilemmas", "numbered", dilemma_numbered_prompt),
        _template("moral_anecdotes", "paraphrase", anecdote_paraphrase_prompt),
        _template("moral_anecdotes", "numbered", anecdote_numbered_prompt),
    )
}
"""Prompt-sensitivity variants of the log-probability tasks: same data, labels and scoring, another
wording (``paraphrase``) or option labels 1, 2, ... instead of A, B, ... (``numbered``)."""

LM_EVAL_TASKS.update(READOUT_TASKS)
LM_EVAL_TASKS.update(TEMPLATES)


def template_siblings(name: str) -> list[str]:
    """The tasks that differ from ``name`` only in their prompt template (itself included), base task first."""
    spec = get_task(name)
    return [n for n, s in LM_EVAL_TASKS.items() if not n.endswith(FULL_SUFFIX) and s.base_name == spec.base_name
            and s.readout == spec.readout and s.orders == spec.orders]
