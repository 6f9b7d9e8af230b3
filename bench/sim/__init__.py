"""The scaling simulator: arrival traces, a worker model, our decision and the KEDA and Knative baselines.

``bench/simulate.py`` is the command; ``traces`` makes the arrivals, ``engine`` replays them against a
worker model step by step, ``ours`` drives the real ``policy.decide`` as ``control/loop.py`` does, ``hpa``,
``keda`` and ``knative`` are the baselines, ``report`` turns runs into the JSON, Markdown and PNG results.
"""
