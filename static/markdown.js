// Replies as Markdown: markdown-it with raw HTML off (its output holds only the tags it makes
// itself), fenced code highlighted by highlight.js, links http(s)/mailto only, opened in a new
// tab without an opener; images are not rendered, so a reply cannot make the page fetch a URL.
"use strict";

(function (global) {
  const SAFE_LINK = /^(https?:|mailto:)/i;
  const ALIGN = /^text-align:(left|right|center)$/;

  const md = global.markdownit({ html: false, linkify: true, breaks: true });
  md.disable("image");
  md.validateLink = (url) => SAFE_LINK.test(url.trim());

  const rules = md.renderer.rules;
  rules.link_open = (tokens, i, options, env, self) => {
    tokens[i].attrSet("target", "_blank");
    tokens[i].attrSet("rel", "noopener noreferrer nofollow");
    return self.renderToken(tokens, i, options);
  };
  // markdown-it aligns table cells with a style attribute, which the page's CSP refuses: a class instead.
  rules.th_open = rules.td_open = (tokens, i, options, env, self) => {
    const token = tokens[i];
    const align = ALIGN.exec(token.attrGet("style") || "");
    token.attrs = (token.attrs || []).filter(([name]) => name !== "style");
    if (align) token.attrJoin("class", "align-" + align[1]);
    return self.renderToken(tokens, i, options);
  };
  rules.table_open = () => '<div class="table-wrap"><table>\n';
  rules.table_close = () => "</table></div>\n";
  rules.fence = (tokens, i) => {
    const token = tokens[i];
    const lang = token.info.trim().split(/\s+/)[0].toLowerCase();
    const known = lang !== "" && global.hljs !== undefined && global.hljs.getLanguage(lang) !== undefined;
    const code = known ? global.hljs.highlight(token.content, { language: lang, ignoreIllegals: true }).value : md.utils.escapeHtml(token.content);
    const label = lang ? ' data-lang="' + md.utils.escapeHtml(lang) + '"' : "";
    return '<pre class="code"' + label + '><code class="hljs">' + code + "</code></pre>\n";
  };

  function renderMarkdown(text) {
    return md.render(text);
  }

  // Copy buttons on the code blocks of `container` that have none yet.
  function decorate(container, copy) {
    for (const pre of container.querySelectorAll("pre.code:not(.decorated)")) {
      pre.classList.add("decorated");
      const button = document.createElement("button");
      button.className = "copy";
      button.type = "button";
      button.textContent = "Copy";
      button.setAttribute("aria-label", "Copy this code");
      button.addEventListener("click", () => copy(pre.querySelector("code").textContent, button));
      pre.appendChild(button);
    }
  }

  // Where the last top-level block starts among `tokens` (0 when there is only one): a block is
  // finished once the next one has started, so only the last can still change as tokens arrive.
  function lastBlock(tokens) {
    let last = 0;
    tokens.forEach((token, i) => { if (token.level === 0 && token.nesting !== -1 && token.map) last = i; });
    return last;
  }

  function lineOffset(text, line) {
    let offset = 0;
    for (let n = 0; n < line; n++) offset = text.indexOf("\n", offset) + 1;
    return offset;
  }

  // A reply being streamed: finished blocks are rendered once and kept; only the last block is
  // rendered again, at most once per animation frame, so a long reply costs linear work.
  class StreamView {
    constructor(body, copy, onRender) {
      this.body = body;
      this.copy = copy;
      this.onRender = onRender || (() => {});
      this.done = document.createElement("div");
      this.live = document.createElement("div");
      this.done.className = this.live.className = "md-part";
      body.replaceChildren(this.done, this.live);
      this.text = "";
      this.frozen = 0;     // characters of `text` rendered into `done` for good
      this.parsed = 0;     // characters parsed in all, to show the cost stays linear
      this.scheduled = false;
    }

    set(text) {
      this.text = text;
      if (this.scheduled) return;
      this.scheduled = true;
      requestAnimationFrame(() => this.flush());
    }

    flush() {
      this.scheduled = false;
      const tail = this.text.slice(this.frozen);
      const env = {};
      const tokens = md.parse(tail, env);
      this.parsed += tail.length;
      const split = lastBlock(tokens);
      if (split > 0) {
        this.done.insertAdjacentHTML("beforeend", md.renderer.render(tokens.slice(0, split), md.options, env));
        decorate(this.done, this.copy);
        this.frozen += lineOffset(tail, tokens[split].map[0]);
      }
      this.live.innerHTML = md.renderer.render(tokens.slice(split), md.options, env);
      this.onRender();
    }
  }

  global.renderMarkdown = renderMarkdown;
  global.agenticMarkdown = { render: renderMarkdown, decorate, StreamView };
})(window);
