"""The textbook's own layer: what the chapters and labs show, built on ``mmu.x86`` and ``mmu.kvm``.

* ``views``      -- pure render functions (text, HTML, SVG);
* ``widgets*``   -- thin ipywidgets wrappers around the views;
* ``exercises``  -- lab problem generators, checks, the student-copy tool;
* ``workloads``, ``cost`` -- seeded guest workloads and the cycle cost model;
* ``series``     -- the merged patches of the role-refactoring series, with sources.
"""
