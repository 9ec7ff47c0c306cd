"""Text-to-image retrieval quality of a model with a text tower (a CLIP package), on the same labelled folder as
image-to-image: each category is one query, its name in a template ("a photo of a {category}", underscores read as
spaces), searched exactly (numpy) against every labelled image.

- precision@1: whether the best image is of the category;
- precision@5: the share of the 5 best that are, over min(5, images of the category);
- mAP@10: average precision over the 10 best, normalised by min(10, images of the category).
Each is a mean over the categories.
"""

from dataclasses import dataclass

import numpy as np

from predictor.evaluation.retrieval import MAP_DEPTH, EvalSet, ranked_neighbours

DEFAULT_TEMPLATE = "a photo of a {category}"


@dataclass(frozen=True)
class TextScores:
    template: str
    queries: int
    precision_at_1: float
    precision_at_5: float
    map_at_10: float

    def table(self) -> str:
        return "\n".join(
            [
                f"  text -> image, {self.queries} queries {self.template!r}:",
                f"  {'precision@1':<24} {self.precision_at_1:.3f}",
                f"  {'precision@5':<24} {self.precision_at_5:.3f}",
                f"  {'mAP@10':<24} {self.map_at_10:.3f}",
            ]
        )


def check_template(template: str) -> str:
    if "{category}" not in template:
        raise ValueError(f"--text-template must hold {{category}}, got {template!r}")
    try:
        template.format(category="x")
    except (KeyError, IndexError, ValueError) as error:
        raise ValueError(f"--text-template {template!r} is not a template with only {{category}}: {error}") from None
    return template


def query_text(template: str, category: str) -> str:
    return template.format(category=category.replace("_", " "))


def text_to_image_scores(
    labels: np.ndarray, images: np.ndarray, categories: list[str], queries: np.ndarray, template: str
) -> TextScores:
    """Scores from unit vectors of the labelled images and of one text query per category."""
    neighbours = ranked_neighbours(queries @ images.T, MAP_DEPTH)
    p1, p5, ap10 = [], [], []
    for row, category in enumerate(categories):
        relevant = int((labels == category).sum())
        hits = labels[neighbours[row]] == category
        p1.append(float(hits[0]))
        p5.append(float(hits[: min(5, relevant)].mean()))
        top = hits[:MAP_DEPTH]
        ranks = np.arange(1, len(top) + 1)
        ap10.append(float((np.cumsum(top) / ranks * top).sum() / min(MAP_DEPTH, relevant)))
    return TextScores(template, len(categories), float(np.mean(p1)), float(np.mean(p5)), float(np.mean(ap10)))


def evaluate_text_to_image(backbone, eval_set: EvalSet, template: str = DEFAULT_TEMPLATE) -> TextScores:  # noqa: ANN001
    """Text-to-image scores of a loaded Backbone with a text tower, in process."""
    from predictor.embedding.file_embedding import backbone_embedder

    check_template(template)
    images = backbone_embedder(backbone)([path for _, path in eval_set.labelled])
    categories = sorted(set(eval_set.labels.tolist()))
    tokens = backbone.text.tokenize([query_text(template, category) for category in categories])
    return text_to_image_scores(eval_set.labels, images, categories, backbone.embed_text(tokens), template)
