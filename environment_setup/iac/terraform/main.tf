data "azurerm_client_config" "current" {}

locals {
  # Storage accounts and registries allow only lower-case letters and digits, 3 to 24 / 5 to 50 characters.
  compact_name = replace(lower(var.base_name), "-", "")
  suffix       = substr(sha1("${data.azurerm_client_config.current.subscription_id}/${var.resource_group_name}"), 0, 6)
}

resource "azurerm_resource_group" "main" {
  name     = var.resource_group_name
  location = var.location
  tags     = var.tags
}

# Log Analytics workspace: where Application Insights keeps its data (workspace-based Application Insights).
resource "azurerm_log_analytics_workspace" "main" {
  name                = "${var.base_name}-log"
  location            = azurerm_resource_group.main.location
  resource_group_name = azurerm_resource_group.main.name
  sku                 = "PerGB2018"
  retention_in_days   = var.log_retention_days
  tags                = var.tags
}

# Application Insights: telemetry of the scoring service (APPLICATIONINSIGHTS_CONNECTION_STRING) and of the
# workspace's online endpoints.
resource "azurerm_application_insights" "main" {
  name                = "${var.base_name}-appi"
  location            = azurerm_resource_group.main.location
  resource_group_name = azurerm_resource_group.main.name
  workspace_id        = azurerm_log_analytics_workspace.main.id
  application_type    = "web"
  tags                = var.tags
}

# Key Vault of the workspace: datastore credentials and the secrets of the team.
resource "azurerm_key_vault" "main" {
  #checkov:skip=CKV_AZURE_109:Public endpoint on purpose: Microsoft-hosted agents and Azure ML compute reach the vault without a VNet; access is by Azure RBAC only.
  #checkov:skip=CKV_AZURE_189:Same reason as CKV_AZURE_109: no private network in this template; add a private endpoint when the workspace gets a managed VNet.
  #checkov:skip=CKV2_AZURE_32:No private endpoint: the template has no virtual network (see CKV_AZURE_109).
  name                       = "${local.compact_name}kv${local.suffix}"
  location                   = azurerm_resource_group.main.location
  resource_group_name        = azurerm_resource_group.main.name
  tenant_id                  = data.azurerm_client_config.current.tenant_id
  sku_name                   = "standard"
  rbac_authorization_enabled = true
  purge_protection_enabled   = true
  soft_delete_retention_days = 90
  tags                       = var.tags

  network_acls {
    bypass         = "AzureServices"
    default_action = "Allow"
  }
}

# Storage account of the workspace: the default datastores (blob and file share), run outputs, models.
resource "azurerm_storage_account" "main" {
  #checkov:skip=CKV_AZURE_59:Public endpoint on purpose: Microsoft-hosted agents and Azure ML serverless compute read and write it without a VNet; blob public (anonymous) access is off.
  #checkov:skip=CKV2_AZURE_33:No private endpoint: the template has no virtual network (see CKV_AZURE_59).
  #checkov:skip=CKV_AZURE_35:Default network action Allow: needed while the account has no private endpoint (see CKV_AZURE_59).
  #checkov:skip=CKV2_AZURE_1:Microsoft-managed keys: customer-managed keys need a key and an identity set up before the workspace exists; encryption at rest is on either way.
  #checkov:skip=CKV2_AZURE_40:Shared key access stays on: the workspace's default datastores (workspaceblobstore, workspacefilestore) authenticate with the account key.
  #checkov:skip=CKV_AZURE_33:Queue service logging: the workspace does not use queues.
  #checkov:skip=CKV_AZURE_206:Locally redundant storage is enough for a workspace whose data and models can be rebuilt by the pipelines; switch to GRS/ZRS for production data.
  name                            = "${local.compact_name}st${local.suffix}"
  location                        = azurerm_resource_group.main.location
  resource_group_name             = azurerm_resource_group.main.name
  account_tier                    = "Standard"
  account_replication_type        = "LRS"
  account_kind                    = "StorageV2"
  min_tls_version                 = "TLS1_2"
  https_traffic_only_enabled      = true
  allow_nested_items_to_be_public = false
  local_user_enabled              = false
  # Shared keys stay on for the workspace's default datastores (see the CKV2_AZURE_40 skip above).
  shared_access_key_enabled = true
  # Azure ML needs a flat namespace for its default storage account.
  is_hns_enabled = false
  tags           = var.tags

  blob_properties {
    delete_retention_policy {
      days = 14
    }
    container_delete_retention_policy {
      days = 14
    }
  }

  sas_policy {
    expiration_period = "01.00:00:00"
  }
}

# Container registry of the workspace: Azure ML environments and the scoring service image.
resource "azurerm_container_registry" "main" {
  #checkov:skip=CKV_AZURE_139:Public endpoint on purpose: Microsoft-hosted agents push and ACI / App Service / Kubernetes pull without a VNet; access needs Entra ID (admin user is off).
  #checkov:skip=CKV_AZURE_164:Content trust (signed images) needs Premium and a signing setup the template does not have.
  #checkov:skip=CKV_AZURE_165:Geo-replication needs Premium; one region is enough for this template.
  #checkov:skip=CKV_AZURE_166:Image quarantine needs Premium and a scanner that releases images; not part of this template.
  #checkov:skip=CKV_AZURE_167:Untagged-manifest retention policy needs Premium; Standard keeps the registry cheap.
  #checkov:skip=CKV_AZURE_233:Zone redundancy needs Premium; one zone is enough for this template.
  #checkov:skip=CKV_AZURE_237:Dedicated data endpoints need Premium and matter only behind a firewall.
  #checkov:skip=CKV_AZURE_163:Vulnerability scanning is a Microsoft Defender for Containers setting of the subscription, not of the registry resource.
  name                = "${local.compact_name}cr${local.suffix}"
  location            = azurerm_resource_group.main.location
  resource_group_name = azurerm_resource_group.main.name
  sku                 = "Standard"
  admin_enabled       = false
  tags                = var.tags
}

# Identity that Azure Container Instances pull the scoring image with (the registry's admin user is off):
# `python -m ml_service.scoring.deploy.aci --pull-identity <aci_pull_identity_id>` (ACI_PULL_IDENTITY_ID).
resource "azurerm_user_assigned_identity" "aci_pull" {
  name                = "id-${var.base_name}-aci-pull"
  location            = azurerm_resource_group.main.location
  resource_group_name = azurerm_resource_group.main.name
  tags                = var.tags
}

# AcrPull for that identity, on the registry only.
resource "azurerm_role_assignment" "aci_pull" {
  scope                = azurerm_container_registry.main.id
  role_definition_name = "AcrPull"
  principal_id         = azurerm_user_assigned_identity.aci_pull.principal_id
  principal_type       = "ServicePrincipal"
}

# The Azure ML workspace itself.
resource "azurerm_machine_learning_workspace" "main" {
  #checkov:skip=CKV_AZURE_144:Public network access on purpose: Microsoft-hosted agents submit jobs and register models without a VNet; access needs Entra ID through the service connection.
  #checkov:skip=CKV2_AZURE_49:Same reason as CKV_AZURE_144: no VNet or private endpoints in this template.
  #checkov:skip=CKV2_AZURE_50:The workspace holds no high-business-impact data (sample data only); its storage account's public endpoint is justified at CKV_AZURE_59.
  name                          = var.workspace_name
  location                      = azurerm_resource_group.main.location
  resource_group_name           = azurerm_resource_group.main.name
  application_insights_id       = azurerm_application_insights.main.id
  key_vault_id                  = azurerm_key_vault.main.id
  storage_account_id            = azurerm_storage_account.main.id
  container_registry_id         = azurerm_container_registry.main.id
  public_network_access_enabled = true
  tags                          = var.tags

  identity {
    type = "SystemAssigned"
  }
}

# The compute cluster every training job runs on: no node (and no cost) while idle, scaled up per job.
resource "azurerm_machine_learning_compute_cluster" "main" {
  name                          = var.compute_cluster_name
  location                      = azurerm_resource_group.main.location
  machine_learning_workspace_id = azurerm_machine_learning_workspace.main.id
  vm_size                       = var.compute_vm_size
  vm_priority                   = var.compute_low_priority ? "LowPriority" : "Dedicated"
  # Entra ID only: no SSH user or keys on the nodes.
  local_auth_enabled = false
  ssh_public_access_enabled = false
  tags               = var.tags

  scale_settings {
    min_node_count                       = 0
    max_node_count                       = var.compute_max_nodes
    scale_down_nodes_after_idle_duration = "PT120S"
  }

  identity {
    type = "SystemAssigned"
  }
}
