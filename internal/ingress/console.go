package ingress

import (
	"net/http"

	"github.com/sluicehq/sluice/internal/console"
)

// consoleRoutes serves the web console at /console/ on mux. It goes wherever the admin API
// goes (the public listener, or ADMIN_ADDR's), since it is a page of calls to that API and
// must share its origin.
func (s *Server) consoleRoutes(mux *http.ServeMux) {
	mux.Handle("GET "+console.Prefix, s.instrument("GET "+console.Prefix, console.Handler().ServeHTTP))
}
