"""Training: from labelled recordings to a calibrated model bundle (docs/training.md).

The package reuses the live stack instead of copying it: face vectors come from
:class:`models.face.FaceFeatureExtractor`, audio embeddings from :class:`models.audio.AudioEmbedder`
with the same 0.6 s windows, normalisation from :class:`models.sequence.NormStats`, tabular and
anomaly features from :mod:`models.tabular` / :mod:`models.anomaly`, and every evaluation goes
through :class:`models.predictor.Predictor`. Whatever the bot computes live is what was trained on.

Modules, one job each:

* :mod:`.labels` — corpus file naming (RAVDESS, CREMA-D) and CSV manifests → clip specs;
* :mod:`.media` — PyAV decoding: frames at given times, 16 kHz mono audio;
* :mod:`.extract` — one clip → (10, 326) / (10, 1024) sequences with masks; parallel, cached;
* :mod:`.make_dataset` — ``train extract`` end to end: discover → extract → split → save;
* :mod:`.splits` — actor-disjoint splits and the checks that run before any training;
* :mod:`.dataset` — the versioned dataset file (npz + JSON, no pickles) and its norm stats;
* :mod:`.config` — the training configuration (production defaults, TOML/JSON loadable);
* :mod:`.losses`, :mod:`.augment`, :mod:`.transformer_train` — the three-phase transformer recipe;
* :mod:`.xgb_train`, :mod:`.anomaly_train`, :mod:`.calibrate` — the other components;
* :mod:`.evaluate`, :mod:`.report`, :mod:`.metrics` — test-split evaluation through the live predictor;
* :mod:`.runtime` — device choice, seeding, the JSON-lines metrics log;
* :mod:`.components`, :mod:`.pipeline`, :mod:`.cli` — artefacts on disk, ``train all``, the CLI;
* :mod:`.synthetic` — a synthetic dataset with class structure, for tests and smoke runs.
"""
