// The colour theme, applied before the page is drawn (this script is not deferred) so a dark
// page never flashes light: "light", "dark" or "system" (follows the operating system), kept
// per browser in localStorage.
"use strict";

(function (global) {
  const KEY = "agentic:theme";
  const dark = global.matchMedia("(prefers-color-scheme: dark)");

  function chosen() {
    const value = global.localStorage.getItem(KEY);
    return value === "light" || value === "dark" ? value : "system";
  }

  function apply() {
    const theme = chosen();
    document.documentElement.dataset.theme = theme === "system" ? (dark.matches ? "dark" : "light") : theme;
  }

  function choose(theme) {
    if (theme === "system") global.localStorage.removeItem(KEY);
    else global.localStorage.setItem(KEY, theme);
    apply();
  }

  dark.addEventListener("change", apply);
  apply();
  global.agenticTheme = { chosen, choose };
})(window);
