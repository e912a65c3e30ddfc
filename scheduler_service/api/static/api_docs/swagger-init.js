// Starts Swagger UI on the docs page. A file rather than an inline script, so that the page's
// Content-Security-Policy can forbid inline script; the settings come from the container's data attributes.
"use strict";

window.addEventListener("load", function () {
  var container = document.getElementById("swagger-ui-container");
  var config = { url: container.dataset.specUrl, dom_id: "#swagger-ui-container" };
  Object.assign(config, JSON.parse(container.dataset.config || "{}"));
  window.ui = SwaggerUIBundle(config);
});
