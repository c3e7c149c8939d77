;; component text.
;; attack: import the host's `log` interface at a version the host does not
;;         implement (`vivarium:agent/log@0.2.0`).
;; expect: refused: `this host implements vivarium:agent@0.1.0, not 0.2.0`.
(component
  (import "vivarium:agent/log@0.2.0" (instance)))
