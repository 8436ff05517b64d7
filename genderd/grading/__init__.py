"""Live grading and the champion (SPEC §14): every worker grades each event it applies against
the model's answer just before it, in the same atomic call; the grades are read over a window
and compared with the statistics of :mod:`genderd.evaluation`; with
``GENDERD_DEFAULT_MODEL=best`` the service answers from the champion, which changes only on
evidence.

- :mod:`~genderd.grading.plan`: what a worker's apply call grades (the grading block of
  ``_grades.lua``) and the client groups the grades are kept by;
- :mod:`~genderd.grading.live`: the grades of a window, per model, with intervals and the
  comparisons with the champion;
- :mod:`~genderd.grading.champion`: the champion, its history, the check and pinning.
"""
