// Interactive API docs: Swagger UI over this server's openapi.json. The spec has no `servers`, so
// one is set here to the page's own origin and path prefix, and "Try it out" calls this server
// wherever it is mounted (e.g. behind a reverse proxy at /dlserve/). Nothing is fetched from any
// other host: the validator badge is off and the bundle is vendored under ui/vendor/.
"use strict";

/** Fixes what Swagger UI renders without an accessible name or keyboard access (axe-core rules
 * select-name and scrollable-region-focusable), as it renders it. */
function accessibilityFixes(root) {
  const fix = () => {
    for (const el of root.querySelectorAll("select#servers:not([aria-label])")) el.setAttribute("aria-label", "Server");
    for (const el of root.querySelectorAll("pre:not([tabindex])")) el.tabIndex = 0;
  };
  new MutationObserver(fix).observe(root, { childList: true, subtree: true });
  fix();
}

(async function () {
  const status = document.getElementById("docs-status");
  const base = new URL(".", location.href).href.replace(/\/$/, "");
  try {
    const resp = await fetch("openapi.json", { headers: { accept: "application/json" } });
    if (!resp.ok) throw new Error(`openapi.json: HTTP ${resp.status}`);
    const spec = await resp.json();
    spec.servers = [{ url: base, description: "this server" }];
    accessibilityFixes(document.getElementById("swagger-ui"));
    window.ui = SwaggerUIBundle({
      spec,
      dom_id: "#swagger-ui",
      // Deep links make each operation's path a link inside its expand button (nested controls).
      deepLinking: false,
      validatorUrl: null,
      tryItOutEnabled: false,
      displayRequestDuration: true,
      // Plain response bodies: the highlighter themes colour some tokens below AA contrast.
      syntaxHighlight: { activated: false },
      defaultModelsExpandDepth: 0,
      presets: [SwaggerUIBundle.presets.apis],
      layout: "BaseLayout",
    });
  } catch (err) {
    status.textContent = `Could not load the API description: ${err.message}`;
    status.className = "error";
  }
})();
