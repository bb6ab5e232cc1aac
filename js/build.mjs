// Builds the browser bundle into the Python package (run by `npm run build`, which
// hatch-jupyter-builder runs at the package's build): jupyter_transports/static/widgets/
// widgets.js (an ES module) and widgets.css, plus the fonts the CSS names. Nothing is fetched at
// run time: the Jupyter server serves all of it.

import { readFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";

const OUT_DIR = fileURLToPath(new URL("../jupyter_transports/static/widgets/", import.meta.url));
const ANYWIDGET_AMD = 'define(["@jupyter-widgets/base"], widget_default);';

// anywidget's package is an AMD module for JupyterLab's loader: export its factory instead.
const anywidgetAsEsm = {
  name: "anywidget-as-esm",
  setup(build) {
    build.onLoad({ filter: /[\\/]anywidget[\\/]dist[\\/]index\.js$/ }, async ({ path }) => {
      const source = await readFile(path, "utf8");
      if (!source.includes(ANYWIDGET_AMD)) {
        throw new Error(`${path} no longer ends in ${ANYWIDGET_AMD}: update build.mjs`);
      }
      return { contents: source.replace(ANYWIDGET_AMD, "export default widget_default;") };
    });
  },
};

// html-manager can load ipywidgets 7 models (base@1, controls@1): this bundle supports the
// ipywidgets 8 line only, so those packages (and their CSS) are left out.
const withoutIpywidgets7 = {
  name: "without-ipywidgets-7",
  setup(build) {
    build.onResolve({ filter: /^@jupyter-widgets\/(base7|controls7)(\/|$)/ }, ({ path }) => ({
      path,
      namespace: "ipywidgets7",
    }));
    build.onLoad({ filter: /\.css$/, namespace: "ipywidgets7" }, () => ({
      contents: "",
      loader: "css",
    }));
    build.onLoad({ filter: /.*/, namespace: "ipywidgets7" }, () => ({
      contents:
        'throw new Error("ipywidgets 7 models are not supported here: the kernel needs ipywidgets 8");',
      loader: "js",
    }));
  },
};

await esbuild.build({
  entryPoints: { widgets: "src/index.ts" },
  bundle: true,
  format: "esm",
  platform: "browser",
  target: ["es2022"],
  minify: true,
  legalComments: "linked",
  outdir: OUT_DIR,
  plugins: [anywidgetAsEsm, withoutIpywidgets7],
  define: { "process.env.NODE_ENV": '"production"' },
  // Font Awesome names several formats of each font; browsers take woff2 first.
  loader: {
    ".woff2": "file",
    ".woff": "empty",
    ".ttf": "empty",
    ".eot": "empty",
    ".svg": "empty",
  },
  assetNames: "fonts/[name]-[hash]",
  logLevel: "warning",
});
console.log(`built ${OUT_DIR}`);
