// Package console is Sluice's web console: a handful of static files (HTML, CSS and plain
// JavaScript, embedded in the binary) that the ingress serves at /console/ next to the admin
// API they call.
//
// Invariants:
//   - Nothing is loaded from another origin: the Content-Security-Policy allows only 'self',
//     with no inline script or style, and the pages may not be framed.
//   - The admin token lives in the browser's sessionStorage and travels only in the
//     Authorization header of the console's calls to /admin/v1; it is never put in a URL.
//   - There is no build step: the files under static/ are what the browser runs.
package console
