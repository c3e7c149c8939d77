;; component text.
;; attack: reach the network through `wasi:http/outgoing-handler@0.2.6`
;;         instead of sockets.
;; expect: refused: package `wasi:http` is not provided by this host.
(component
  (import "wasi:http/outgoing-handler@0.2.6" (instance)))
