;; component text.
;; attack: import a host service the grant does not name
;;         (`vivarium:agent/memory@0.1.0`, the persistent key-value store).
;; expect: refused before instantiation, naming the import (not granted, or
;;         not provided by this host yet).
(component
  (import "vivarium:agent/memory@0.1.0" (instance)))
