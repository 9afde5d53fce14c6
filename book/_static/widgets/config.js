// Where the widget manager finds its own files.  embed-amd.js takes the folder of its AMD
// module "@jupyter-widgets/html-manager/dist/..." as webpack's public path (FontAwesome
// fonts for icon buttons); by default require.js puts that folder under the page's own
// folder, where nothing is.  Point it at this folder (_static/widgets), which holds them.
(function () {
  var here = document.currentScript.src.replace(/\/[^\/]*$/, "");
  require.config({ paths: { "@jupyter-widgets/html-manager/dist": here } });
})();
