;; component text.
;; attack: import a made-up interface of the host's own package
;;         (`vivarium:agent/telepathy@0.1.0`).
;; expect: refused: `telepathy` is not an interface of vivarium:agent@0.1.0.
(component
  (import "vivarium:agent/telepathy@0.1.0" (instance (export "read-mind" (func)))))
