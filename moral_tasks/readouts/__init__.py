"""Readouts of a model's distribution over the options other than first-token log-probabilities.

* :mod:`.task`: the generation tasks (verbalized distribution, sampled answers, greedy answer),
  scored with the log-probability tasks' metrics (:func:`moral_tasks.scoring.score_records`);
* :mod:`.verbalized`: the parser of a stated distribution;
* :mod:`.analysis`: answer consistency (first-token argmax vs written answer) and the spread of
  a metric over prompt templates.
"""
