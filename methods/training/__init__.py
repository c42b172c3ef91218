"""Training and selection code of the methods, apart from the code that serves them.

The runtime modules (``methods/*.py``) load shipped or cached artifacts; the modules here write them:

* :mod:`.gates`: the gate probe's fit, the gate thresholds' choice on the dev split, and dev-split screening;
* :mod:`.sae`: SAE training (``steerboard sae train``), feature discovery (``steerboard sae features``) and
  the presets' maximum-activation record;
* :mod:`.preference`: DPO/SFT adapter training (``python -m steerboard.methods.dpo train``).

A runtime module never imports these, except through the one lazy entry point each method documents for an
artifact that is neither shipped nor cached (docs/architecture.md; ``tests/test_architecture.py`` checks it).
"""
