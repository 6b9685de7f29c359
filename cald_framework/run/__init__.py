"""``run``: the whole pipeline a spec asks for, one module per stage.

:mod:`.prepare` (the :class:`~.prepare.RunContext` every stage and the analyses share) ->
:mod:`.teachers` (fine-tuning cache, target, waypoints) -> :mod:`.convert` -> :mod:`.train` ->
:mod:`.export` -> :mod:`.report`; :mod:`.pipeline` runs them in that order.
"""
