"""Tools around the method, each a command (``python -m dancelcm.tools.<name>``, options in ``conf/``):

- ``bench``: the speed claims as ratios measured side by side in one run (``make bench``);
- ``probe``: a model's one-step x0 estimate against the noise level (a teacher diagnosis);
- ``feature_net``: (re)train the offline feature network the Frechet distance is measured in;
- ``half``: a float16 copy of a model bundle (what ships in git).
"""
